//! [`NodeKey`]: a node's ed25519 signing key, and its file on disk.

use std::fmt;
use std::path::Path;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use knhk_types::{AgentId, EnvelopeSigner, Signature};

use crate::error::KeyError;

/// A node's identity key. Its public half is the node's [`AgentId`].
///
/// Stored as a PKCS#8 PEM file (the format `openssl genpkey -algorithm ed25519`
/// writes), created with mode 0600. `Debug` never prints the secret.
#[derive(Clone)]
pub struct NodeKey {
    signing: SigningKey,
    id: AgentId,
}

impl NodeKey {
    /// A fresh key from the operating system's randomness.
    ///
    /// Errors: [`KeyError::Randomness`] if the OS has none to give.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Randomness(e.to_string()))?;
        Ok(Self::from_seed(seed))
    }

    /// The key with this 32-byte secret seed (for tests and simulations: derive seeds
    /// from a seeded RNG and every run has the same identities).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self::from_signing_key(SigningKey::from_bytes(&seed))
    }

    /// Wraps an ed25519-dalek key.
    pub fn from_signing_key(signing: SigningKey) -> Self {
        let id = AgentId::from_verifying_key(&signing.verifying_key());
        Self { signing, id }
    }

    /// This node's identity.
    pub fn agent_id(&self) -> AgentId {
        self.id
    }

    /// The underlying ed25519-dalek key (for TLS certificates and other libraries).
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// Writes the key to `path` as PKCS#8 PEM with mode 0600, replacing any file there
    /// atomically: written to a fresh, exclusively created temporary file in the same
    /// directory (never following a planted link), synced, then renamed over `path`.
    ///
    /// Errors: [`KeyError::Io`] if the directory is not writable.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let pem = self
            .signing
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let mut temporary = tempfile::NamedTempFile::new_in(directory).map_err(io)?;
        restrict_to_owner(temporary.as_file()).map_err(io)?;
        std::io::Write::write_all(&mut temporary, pem.as_bytes()).map_err(io)?;
        temporary.as_file().sync_all().map_err(io)?;
        temporary.persist(path).map_err(|e| io(e.error))?;
        // Make the rename itself durable.
        if let Ok(dir) = std::fs::File::open(directory) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Reads a key written by [`NodeKey::save`] (or `openssl genpkey -algorithm ed25519`).
    ///
    /// Errors: [`KeyError::InsecurePermissions`] if group or others may read or write
    /// the file (Unix), [`KeyError::Malformed`] if it is not an ed25519 PKCS#8 PEM key,
    /// [`KeyError::Io`] if it cannot be read.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        check_private(path).map_err(io)??;
        let pem = std::fs::read_to_string(path).map_err(io)?;
        let signing = SigningKey::from_pkcs8_pem(&pem).map_err(|e| KeyError::Malformed {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self::from_signing_key(signing))
    }

    /// Loads the key at `path`, or generates and saves one if no file exists.
    ///
    /// Errors: as [`NodeKey::load`] and [`NodeKey::save`].
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyError> {
        if path.exists() {
            Self::load(path)
        } else {
            let key = Self::generate()?;
            key.save(path)?;
            Ok(key)
        }
    }
}

impl EnvelopeSigner for NodeKey {
    fn agent_id(&self) -> AgentId {
        self.id
    }

    fn sign_message(&self, message: &[u8]) -> Signature {
        self.signing.sign_message(message)
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({:?}, secret hidden)", self.id)
    }
}

#[cfg(unix)]
fn restrict_to_owner(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict_to_owner(_file: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}

/// `Ok(Err(..))` if the file is open to other users.
#[cfg(unix)]
fn check_private(path: &Path) -> std::io::Result<Result<(), KeyError>> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Ok(Err(KeyError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        }));
    }
    Ok(Ok(()))
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> std::io::Result<Result<(), KeyError>> {
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let key = NodeKey::from_seed([4; 32]);
        key.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(NodeKey::load(&path).unwrap().agent_id(), key.agent_id());
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_key_is_refused_with_a_clear_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        NodeKey::from_seed([5; 32]).save(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = NodeKey::load(&path).unwrap_err();
        assert!(matches!(
            error,
            KeyError::InsecurePermissions { mode: 0o644, .. }
        ));
        assert!(error.to_string().contains("chmod 600"), "{error}");
    }

    #[test]
    fn garbage_file_is_malformed_and_missing_file_is_io() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.key");
        NodeKey::from_seed([6; 32]).save(&path).unwrap();
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            NodeKey::load(&path),
            Err(KeyError::Malformed { .. })
        ));
        assert!(matches!(
            NodeKey::load(&dir.path().join("absent.key")),
            Err(KeyError::Io { .. })
        ));
    }

    #[test]
    fn load_or_generate_creates_once_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let first = NodeKey::load_or_generate(&path).unwrap();
        let second = NodeKey::load_or_generate(&path).unwrap();
        assert_eq!(first.agent_id(), second.agent_id());
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = NodeKey::from_seed([7; 32]);
        let shown = format!("{key:?}");
        assert!(shown.contains("secret hidden"));
        assert!(!shown.contains("0707"));
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(
            NodeKey::generate().unwrap().agent_id(),
            NodeKey::generate().unwrap().agent_id()
        );
    }
}
