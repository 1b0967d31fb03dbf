//! Which database holds the rows, from a URL or the default SQLite file.

use std::path::{Path, PathBuf};

/// Which database holds the rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Postgres(String),
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// `postgres://` and `postgresql://` URLs select PostgreSQL; `sqlite://PATH`
    /// or a plain path select that SQLite file; no URL selects
    /// `chunkd.sqlite3` in the data directory.
    pub fn resolve(url: Option<&str>, data_dir: &Path) -> Result<Self, String> {
        match url.map(str::trim).filter(|u| !u.is_empty()) {
            None => Ok(DatabaseUrl::Sqlite(data_dir.join("chunkd.sqlite3"))),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(DatabaseUrl::Postgres(u.to_owned()))
            }
            Some(u) if u.starts_with("sqlite://") => {
                Ok(DatabaseUrl::Sqlite(PathBuf::from(&u["sqlite://".len()..])))
            }
            Some(u) if !u.contains("://") => Ok(DatabaseUrl::Sqlite(PathBuf::from(u))),
            Some(u) => Err(format!(
                "unsupported database URL {u:?}: use postgres://… or a SQLite file path"
            )),
        }
    }

    /// For logs: the backend and where it is, without credentials.
    pub fn describe(&self) -> String {
        match self {
            DatabaseUrl::Postgres(url) => {
                let host = url.rsplit('@').next().unwrap_or(url);
                let host = host
                    .trim_start_matches("postgres://")
                    .trim_start_matches("postgresql://");
                format!("PostgreSQL at {host}")
            }
            DatabaseUrl::Sqlite(path) => format!("SQLite at {}", path.display()),
        }
    }
}
