//! Where a node's cookie comes from.
//!
//! In order: the builder's value, the `JOERL_COOKIE` environment variable, the
//! file `~/.joerl.cookie`. A missing file is created with 20 random uppercase
//! letters and owner-only permissions (0400), as Erlang does with
//! `~/.erlang.cookie`. A cookie file readable by group or others is refused, for
//! the same reason Erlang refuses one.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::DistError;

/// The environment variable that holds a cookie.
pub const COOKIE_ENV: &str = "JOERL_COOKIE";

/// The cookie file's name in the home directory.
pub const COOKIE_FILE: &str = ".joerl.cookie";

/// Resolves the cookie: `explicit`, else `JOERL_COOKIE`, else `~/.joerl.cookie`.
pub fn resolve(explicit: Option<&str>) -> Result<String, DistError> {
    if let Some(c) = explicit {
        return check(c.to_string(), "the builder");
    }
    if let Ok(c) = std::env::var(COOKIE_ENV) {
        return check(c, COOKIE_ENV);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).ok_or_else(|| {
        DistError::Cookie(format!(
            "no cookie given, {COOKIE_ENV} is unset, and HOME is unset"
        ))
    })?;
    read_or_create(&home.join(COOKIE_FILE))
}

fn check(cookie: String, source: &str) -> Result<String, DistError> {
    let cookie = cookie.trim().to_string();
    if cookie.is_empty() {
        return Err(DistError::Cookie(format!(
            "the cookie from {source} is empty"
        )));
    }
    Ok(cookie)
}

/// Reads the cookie file at `path`, creating it with a random cookie if missing.
pub fn read_or_create(path: &Path) -> Result<String, DistError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)
                    .map_err(|e| DistError::Cookie(format!("{}: {e}", path.display())))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(DistError::Cookie(format!(
                        "{} is readable by other users (mode {:o}); run chmod 400 on it",
                        path.display(),
                        mode & 0o777
                    )));
                }
            }
            check(text, &path.display().to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let cookie: String = (0..20)
                .map(|_| char::from(b'A' + (rand::random::<u8>() % 26)))
                .collect();
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o400);
            }
            let mut file = opts
                .open(path)
                .map_err(|e| DistError::Cookie(format!("cannot create {}: {e}", path.display())))?;
            file.write_all(cookie.as_bytes())
                .map_err(|e| DistError::Cookie(format!("cannot write {}: {e}", path.display())))?;
            tracing::info!(path = %path.display(), "created a new cookie file");
            Ok(cookie)
        }
        Err(e) => Err(DistError::Cookie(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("joerl-cookie-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn missing_file_is_created_owner_only_and_reused() {
        let dir = temp_dir("create");
        let path = dir.join(COOKIE_FILE);
        let first = read_or_create(&path).unwrap();
        assert_eq!(first.len(), 20);
        assert!(first.chars().all(|c| c.is_ascii_uppercase()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o400);
        }
        assert_eq!(read_or_create(&path).unwrap(), first);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("perm");
        let path = dir.join(COOKIE_FILE);
        std::fs::write(&path, "ABC").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 400"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn explicit_cookie_wins_and_empty_is_refused() {
        assert_eq!(resolve(Some(" abc ")).unwrap(), "abc");
        assert!(resolve(Some("  ")).is_err());
    }
}
