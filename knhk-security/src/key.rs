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
    /// Errors: [`KeyError::Symlink`] if `path` is a symbolic link (it is never replaced),
    /// [`KeyError::InsecureDirectory`] if the directory is writable by every user,
    /// [`KeyError::Io`] if the directory is not writable.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        self.write_file(path, true)
    }

    /// Reads a key written by [`NodeKey::save`] (or `openssl genpkey -algorithm ed25519`).
    ///
    /// The file is opened once, without following a symbolic link, and every check is
    /// made on the open handle (no race between checking a path and reading it): it
    /// must be a regular file owned by this process's user, not readable or writable by
    /// group or others, at most 16 KiB, in a directory not writable by every user.
    ///
    /// Errors: [`KeyError::Symlink`], [`KeyError::WrongOwner`],
    /// [`KeyError::InsecurePermissions`], [`KeyError::TooLarge`],
    /// [`KeyError::InsecureDirectory`], [`KeyError::Malformed`] if it is not an ed25519
    /// PKCS#8 PEM key, [`KeyError::Io`] if it cannot be read.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        check_directory(path)?;
        let file = open_no_follow(path)?;
        check_private(path, &file)?;
        let mut pem = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(&file, MAX_KEY_FILE_BYTES + 1),
            &mut pem,
        )
        .map_err(io)?;
        if pem.len() as u64 > MAX_KEY_FILE_BYTES {
            return Err(KeyError::TooLarge {
                path: path.to_owned(),
                len: pem.len() as u64,
                max: MAX_KEY_FILE_BYTES,
            });
        }
        let signing = SigningKey::from_pkcs8_pem(&pem).map_err(|e| KeyError::Malformed {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self::from_signing_key(signing))
    }

    /// Loads the key at `path`, or generates and saves one if nothing is there.
    ///
    /// Only a path that does not exist at all gets a new key, created exclusively (it
    /// never replaces a file or link that appeared meanwhile). Anything else at the
    /// path (a dangling or live symbolic link, an unreadable file, an unmounted volume's
    /// error) is an error, never a silent new identity.
    ///
    /// Errors: as [`NodeKey::load`] and [`NodeKey::save`].
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyError> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => Self::load(path),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                key.write_file(path, false)?;
                Ok(key)
            }
            Err(source) => Err(KeyError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes the PEM through a fresh temporary file; replaces an existing file only if
    /// `replace`, and never a symbolic link.
    fn write_file(&self, path: &Path, replace: bool) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        if std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink()) {
            return Err(KeyError::Symlink {
                path: path.to_owned(),
            });
        }
        check_directory(path)?;
        let pem = self
            .signing
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let directory = directory_of(path);
        let mut temporary = tempfile::NamedTempFile::new_in(directory).map_err(io)?;
        restrict_to_owner(temporary.as_file()).map_err(io)?;
        std::io::Write::write_all(&mut temporary, pem.as_bytes()).map_err(io)?;
        temporary.as_file().sync_all().map_err(io)?;
        if replace {
            temporary.persist(path).map_err(|e| io(e.error))?;
        } else {
            temporary.persist_noclobber(path).map_err(|e| io(e.error))?;
        }
        // Make the rename itself durable.
        if let Ok(dir) = std::fs::File::open(directory) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// The most a key file may hold (a PEM ed25519 key is about 120 bytes).
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
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

/// Opens `path` for reading without following a symbolic link at its last component.
#[cfg(unix)]
fn open_no_follow(path: &Path) -> Result<std::fs::File, KeyError> {
    use rustix::fs::{Mode, OFlags};
    match rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(std::fs::File::from(fd)),
        Err(rustix::io::Errno::LOOP) => Err(KeyError::Symlink {
            path: path.to_owned(),
        }),
        Err(errno) => Err(KeyError::Io {
            path: path.to_owned(),
            source: errno.into(),
        }),
    }
}

#[cfg(not(unix))]
fn open_no_follow(path: &Path) -> Result<std::fs::File, KeyError> {
    std::fs::File::open(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The open file must be a regular file of ours that nobody else may read or write.
#[cfg(unix)]
fn check_private(path: &Path, file: &std::fs::File) -> Result<(), KeyError> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(KeyError::Io {
            path: path.to_owned(),
            source: std::io::Error::other("not a regular file"),
        });
    }
    let us = rustix::process::geteuid().as_raw();
    if meta.uid() != us {
        return Err(KeyError::WrongOwner {
            path: path.to_owned(),
            owner: meta.uid(),
            us,
        });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _file: &std::fs::File) -> Result<(), KeyError> {
    Ok(())
}

/// The key's directory must not be writable by every user unless it is sticky (as
/// /tmp): otherwise anyone could remove the key and have a new identity made.
/// Group-writable service directories (0770) are allowed: the group is trusted.
#[cfg(unix)]
fn check_directory(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(directory_of(path)) else {
        // A missing directory fails at open or create with its own error.
        return Ok(());
    };
    let (world_writable, sticky) = (meta.mode() & 0o002 != 0, meta.mode() & 0o1000 != 0);
    if world_writable && !sticky {
        return Err(KeyError::InsecureDirectory {
            path: path.to_owned(),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_directory(_path: &Path) -> Result<(), KeyError> {
    Ok(())
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

    /// Hardening finding 9: each of these used to load, replace or invent an identity.
    #[cfg(unix)]
    #[test]
    fn key_files_are_refused_unless_they_are_plainly_ours() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.key");
        NodeKey::from_seed([8; 32]).save(&real).unwrap();

        // A dangling symlink: no new identity is created behind it.
        let dangling = dir.path().join("dangling.key");
        std::os::unix::fs::symlink(dir.path().join("nowhere.key"), &dangling).unwrap();
        assert!(matches!(
            NodeKey::load_or_generate(&dangling),
            Err(KeyError::Symlink { .. })
        ));
        assert!(!dir.path().join("nowhere.key").exists());
        // A live symlink is not followed, and never replaced by a save.
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(
            NodeKey::load(&link),
            Err(KeyError::Symlink { .. })
        ));
        assert!(matches!(
            NodeKey::from_seed([9; 32]).save(&link),
            Err(KeyError::Symlink { .. })
        ));
        assert_eq!(
            NodeKey::load(&real).unwrap().agent_id(),
            NodeKey::from_seed([8; 32]).agent_id()
        );

        // A huge file is not read in full.
        let huge = dir.path().join("huge.key");
        std::fs::write(&huge, vec![b'A'; 64 * 1024 * 1024]).unwrap();
        std::fs::set_permissions(&huge, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            NodeKey::load(&huge),
            Err(KeyError::TooLarge { .. })
        ));

        // An error other than "absent" is not an absent key.
        let under_a_file = real.join("node.key");
        assert!(matches!(
            NodeKey::load_or_generate(&under_a_file),
            Err(KeyError::Io { .. })
        ));

        // Someone else's file (checkable only where we may give a file away: as root).
        if rustix::process::geteuid().is_root() {
            let theirs = dir.path().join("theirs.key");
            NodeKey::from_seed([10; 32]).save(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(1), None).unwrap();
            assert!(matches!(
                NodeKey::load(&theirs),
                Err(KeyError::WrongOwner { owner: 1, .. })
            ));
        }

        // A directory anyone may write to.
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            NodeKey::load_or_generate(&open.join("node.key")),
            Err(KeyError::InsecureDirectory { .. })
        ));
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
