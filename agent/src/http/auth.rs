//! HTTP basic auth against the web config's bcrypt hashes. An unknown user
//! costs one bcrypt of the same cost as a known one, so response times do not
//! tell which users exist. Good credentials are remembered (as exporter-toolkit
//! does) so a scrape every few seconds does not pay a bcrypt each time.

use anyhow::{Result, bail};
use base64::Engine;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// Checks that a hash is a bcrypt hash (`$2a$`, `$2b$`, `$2y$`).
pub fn check_hash(hash: &str) -> Result<()> {
    if !hash.starts_with("$2") {
        bail!(
            "not a bcrypt hash (it should start with $2y$ or $2b$; make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
        );
    }
    hash.parse::<bcrypt::HashParts>()
        .map_err(|e| anyhow::anyhow!("not a valid bcrypt hash: {e}"))?;
    Ok(())
}

/// The users of one reading of the web config.
pub struct Users {
    users: BTreeMap<String, String>,
    /// Compared against for unknown users: same cost as the real hashes.
    dummy: String,
    good: Mutex<HashSet<(String, String)>>,
}

/// At most this many remembered good credentials (then the memory starts over).
const REMEMBERED: usize = 64;

impl Users {
    /// None when the file has no users (no auth).
    pub fn new(users: &BTreeMap<String, String>) -> Result<Option<Arc<Users>>> {
        if users.is_empty() {
            return Ok(None);
        }
        let cost = users
            .values()
            .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map(|p| p.get_cost())
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST);
        let dummy = bcrypt::hash_with_salt("not a password", cost, [7; 16])?.to_string();
        Ok(Some(Arc::new(Users {
            users: users.clone(),
            dummy,
            good: Mutex::new(HashSet::new()),
        })))
    }

    /// Whether the Authorization header's credentials are good. bcrypt runs on
    /// the blocking pool, `bcrypts` bounding how many at once.
    pub async fn check(self: &Arc<Self>, authorization: Option<&str>, bcrypts: &Semaphore) -> bool {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return false;
        };
        let key = (user, password);
        if self.good.lock().unwrap().contains(&key) {
            return true;
        }
        let Ok(_permit) = bcrypts.acquire().await else {
            return false;
        };
        let me = self.clone();
        let key2 = key.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let (user, password) = &key2;
            let (hash, known) = match me.users.get(user) {
                Some(h) => (h.as_str(), true),
                None => (me.dummy.as_str(), false),
            };
            bcrypt::verify(password, hash).unwrap_or(false) && known
        })
        .await
        .unwrap_or(false);
        if ok {
            let mut good = self.good.lock().unwrap();
            if good.len() >= REMEMBERED {
                good.clear();
            }
            good.insert(key);
        }
        ok
    }
}

/// `Basic base64(user:password)`.
fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, value) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_parsing() {
        assert_eq!(
            parse_basic("Basic YWxpY2U6czNjcjp0"),
            Some(("alice".into(), "s3cr:t".into()))
        );
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        assert_eq!(parse_basic("Basic bm9jb2xvbg=="), None);
    }

    #[tokio::test]
    async fn known_unknown_and_wrong() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        check_hash(&hash).unwrap();
        assert!(check_hash("plain").is_err());
        assert!(check_hash("$2y$10$short").is_err());
        let users = Users::new(&BTreeMap::from([("alice".to_string(), hash)]))
            .unwrap()
            .unwrap();
        let sem = Semaphore::new(1);
        let header = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        assert!(users.check(Some(&header("alice", "s3cret")), &sem).await);
        assert!(users.check(Some(&header("alice", "s3cret")), &sem).await); // remembered
        assert!(!users.check(Some(&header("alice", "wrong")), &sem).await);
        assert!(!users.check(Some(&header("mallory", "s3cret")), &sem).await);
        assert!(!users.check(None, &sem).await);
        assert!(Users::new(&BTreeMap::new()).unwrap().is_none());
    }
}
