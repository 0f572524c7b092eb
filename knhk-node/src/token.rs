//! The admin token: a random secret in a file only its owner can read.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::NodeError;

/// Reads the token in `path`; if there is no file there and it lies in `data_dir`
/// (the default place), creates one (32 random bytes as hex, mode 0600) first. A
/// token file named in the configuration must exist.
///
/// Errors: [`NodeError::File`] if it cannot be read or created, or is readable by
/// group or others; [`NodeError::Usage`] if it is empty.
pub fn load_or_create(path: &Path, data_dir: &Path) -> Result<String, NodeError> {
    let file_error = |source| NodeError::File {
        path: path.to_owned(),
        source,
    };
    if std::fs::symlink_metadata(path).is_err() && path.parent() == Some(data_dir) {
        std::fs::create_dir_all(data_dir).map_err(file_error)?;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|error| file_error(std::io::Error::other(error.to_string())))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(file_error)?;
        writeln!(file, "{}", data_encoding::HEXLOWER.encode(&secret)).map_err(file_error)?;
        file.sync_all().map_err(file_error)?;
        tracing::info!(path = %path.display(), "created the admin token");
    }
    let metadata = std::fs::metadata(path).map_err(file_error)?;
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(file_error(std::io::Error::other(
            "the admin token is readable by others: chmod 600 it",
        )));
    }
    let token = std::fs::read_to_string(path).map_err(file_error)?;
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(NodeError::Usage(format!(
            "the admin token file {} is empty",
            path.display()
        )));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_created_once_in_the_data_dir_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        let first = load_or_create(&path, dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(load_or_create(&path, dir.path()).unwrap(), first);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_configured_token_file_must_exist_and_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("secrets/token");
        assert!(load_or_create(&elsewhere, dir.path()).is_err());
        let open = dir.path().join("open.token");
        std::fs::write(&open, "abc\n").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create(&open, Path::new("/nowhere")).is_err());
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_or_create(&open, Path::new("/nowhere")).unwrap(), "abc");
    }
}
