//! `keygen` and `certify`: a node's key file, and a membership certificate signed by
//! the cluster's admission key.

use std::path::Path;
use std::time::{Duration, SystemTime};

use knhk_security::NodeKey;
use knhk_types::{
    AgentId, HierarchyLevel, MembershipCertificate, MembershipClaims, Region, UnixMillis,
};

use crate::error::NodeError;

/// Creates a new key at `path` (mode 0600) and returns its agent id. Never replaces
/// anything: a file, directory or link already at `path` is an error.
///
/// Errors: [`NodeError::Usage`] if something is at `path`; [`NodeError::Key`] if the
/// key cannot be written (an unwritable or world-writable directory).
pub fn keygen(path: &Path) -> Result<AgentId, NodeError> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(NodeError::Usage(format!(
            "{} exists: refusing to overwrite a key (move it away first)",
            path.display()
        )));
    }
    // Creates exclusively: a file that appeared meanwhile is loaded, never replaced.
    let key = NodeKey::load_or_generate(path)?;
    Ok(key.agent_id())
}

/// What `certify` puts in a certificate.
#[derive(Clone, Debug)]
pub struct CertifyRequest<'a> {
    /// The admission key's file.
    pub authority_key: &'a Path,
    /// The node certified.
    pub agent: AgentId,
    /// Its cluster.
    pub cluster: &'a str,
    /// Its region.
    pub region: &'a str,
    /// Days it is valid from now.
    pub days: u32,
    /// Where to write it.
    pub out: &'a Path,
}

/// Issues a certificate for `request.agent`, signed by the admission key, and writes
/// its text form to `request.out` (never replacing a file). Returns the text.
///
/// Errors: [`NodeError::Key`] for the admission key file, [`NodeError::Usage`] for a
/// bad region or an existing output file, [`NodeError::Certificate`] if it cannot be
/// issued, [`NodeError::File`] if it cannot be written.
pub fn certify(request: &CertifyRequest<'_>) -> Result<String, NodeError> {
    let authority = NodeKey::load(request.authority_key)?;
    let region = Region::new(request.region)
        .map_err(|error| NodeError::Usage(format!("--region {:?}: {error}", request.region)))?;
    let now = UnixMillis::from_system_time(SystemTime::now());
    let claims = MembershipClaims {
        cluster: request.cluster.to_owned(),
        agent: request.agent,
        region,
        role: HierarchyLevel::Edge,
        not_before: now,
        expires: now.saturating_add(Duration::from_secs(u64::from(request.days) * 86_400)),
    };
    let refused = |reason: String| NodeError::Certificate {
        path: request.out.to_owned(),
        reason,
    };
    let text = MembershipCertificate::issue(authority.signing_key(), claims)
        .and_then(|certificate| certificate.to_text())
        .map_err(|error| refused(error.to_string()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(request.out)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => NodeError::Usage(format!(
                "{} exists: refusing to overwrite",
                request.out.display()
            )),
            _ => NodeError::File {
                path: request.out.to_owned(),
                source,
            },
        })?;
    std::io::Write::write_all(&mut file, format!("{text}\n").as_bytes()).map_err(|source| {
        NodeError::File {
            path: request.out.to_owned(),
            source,
        }
    })?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let id = keygen(&path).unwrap();
        assert_eq!(NodeKey::load(&path).unwrap().agent_id(), id);
        let error = keygen(&path).unwrap_err();
        assert!(matches!(error, NodeError::Usage(_)), "{error}");
        assert_eq!(NodeKey::load(&path).unwrap().agent_id(), id);
    }

    #[test]
    fn a_certificate_is_accepted_by_the_rule_of_its_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let authority_key = dir.path().join("admission.key");
        let authority = keygen(&authority_key).unwrap();
        let node = NodeKey::from_seed([9; 32]).agent_id();
        let out = dir.path().join("node.cert");
        let request = CertifyRequest {
            authority_key: &authority_key,
            agent: node,
            cluster: "prod",
            region: "eu-west",
            days: 30,
            out: &out,
        };
        certify(&request).unwrap();
        crate::daemon::load_certificate(&out, authority, node, "prod").unwrap();
        let wrong = crate::daemon::load_certificate(&out, authority, node, "staging").unwrap_err();
        assert!(wrong.to_string().contains("cluster"), "{wrong}");
        assert!(matches!(
            certify(&request).unwrap_err(),
            NodeError::Usage(_)
        ));
    }
}
