//! Join tokens: `<ca_hash>.<secret>`, where `ca_hash` is the lowercase hex
//! SHA-256 of the CA certificate (DER) and `secret` is
//! `<expiry unix seconds>-<nonce hex>-<HMAC-SHA256 hex>`, signed with a key
//! that lives in the data dir (`token.key`, created on first use, 0600).
//! The secret is opaque to the edge; only cloudcontrol can make or check it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::util::{hex, sha256, unhex};

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token was made for another CA")]
    WrongCa,
    #[error("token signature is invalid (forged or from another cloudcontrol)")]
    BadSignature,
    #[error("token expired {ago_s} s ago")]
    Expired { ago_s: u64 },
}

/// Why the signing key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
#[error("token key {path}: {source}")]
pub struct KeyError {
    path: String,
    source: std::io::Error,
}

/// Makes and checks tokens.
#[derive(Debug)]
pub struct Tokens {
    key: hmac::Key,
    ca_hash: String,
}

const KEY_FILE: &str = "token.key";

impl Tokens {
    /// Loads (creating) the signing key in `data_dir`; `ca_der` is the CA
    /// certificate the tokens vouch for.
    pub fn load(data_dir: &Path, ca_der: &[u8]) -> Result<Tokens, KeyError> {
        let path = data_dir.join(KEY_FILE);
        let err = |source| KeyError {
            path: path.display().to_string(),
            source,
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) if b.len() == 32 => b,
            Ok(_) => return Err(err(std::io::Error::other("not 32 bytes"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut b = vec![0u8; 32];
                SystemRandom::new()
                    .fill(&mut b)
                    .map_err(|_| err(std::io::Error::other("no randomness")))?;
                std::fs::create_dir_all(data_dir).map_err(err)?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(err)?;
                f.write_all(&b).map_err(err)?;
                f.sync_all().map_err(err)?;
                b
            }
            Err(e) => return Err(err(e)),
        };
        Ok(Tokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            ca_hash: hex(&sha256(ca_der)),
        })
    }

    /// A token valid until `now_s + ttl_s`.
    pub fn issue(&self, now_s: u64, ttl_s: u64) -> String {
        let mut nonce = [0u8; 16];
        // The nonce only makes tokens distinct; a failure leaves zeros.
        let _ = SystemRandom::new().fill(&mut nonce);
        let body = format!("{}-{}", now_s.saturating_add(ttl_s), hex(&nonce));
        let mac = hmac::sign(&self.key, body.as_bytes());
        format!("{}.{body}-{}", self.ca_hash, hex(mac.as_ref()))
    }

    /// Checks `token` at `now_s`.
    pub fn verify(&self, token: &str, now_s: u64) -> Result<(), TokenError> {
        let (ca, secret) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let (body, mac) = secret.rsplit_once('-').ok_or(TokenError::Malformed)?;
        let (expiry, _nonce) = body.split_once('-').ok_or(TokenError::Malformed)?;
        let expiry: u64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
        let mac = unhex(mac).ok_or(TokenError::Malformed)?;
        if ca != self.ca_hash {
            return Err(TokenError::WrongCa);
        }
        hmac::verify(&self.key, body.as_bytes(), &mac).map_err(|_| TokenError::BadSignature)?;
        if expiry <= now_s {
            return Err(TokenError::Expired {
                ago_s: now_s - expiry,
            });
        }
        Ok(())
    }

    /// The CA hash tokens start with.
    pub fn ca_hash(&self) -> &str {
        &self.ca_hash
    }
}

/// Parses a duration like `24h`, `90m`, `30s`, `7d` or plain seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86_400),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid duration {s:?} (examples: 30s, 90m, 24h, 7d)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_they_expire_and_forgeries_fail() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tokens::load(dir.path(), b"ca").unwrap();
        let tok = t.issue(1000, 60);
        assert!(tok.starts_with(&hex(&sha256(b"ca"))));
        assert_eq!(t.verify(&tok, 1059), Ok(()));
        assert_eq!(t.verify(&tok, 1070), Err(TokenError::Expired { ago_s: 10 }));
        // Extending the expiry breaks the signature.
        let forged = tok.replacen("1060-", "9999999999-", 1);
        assert_eq!(t.verify(&forged, 1000), Err(TokenError::BadSignature));
        assert_eq!(t.verify("garbage", 1000), Err(TokenError::Malformed));
        // Same key on reload; another data dir's key does not verify.
        let again = Tokens::load(dir.path(), b"ca").unwrap();
        assert_eq!(again.verify(&tok, 1000), Ok(()));
        let other = tempfile::tempdir().unwrap();
        let stranger = Tokens::load(other.path(), b"ca").unwrap();
        assert_eq!(stranger.verify(&tok, 1000), Err(TokenError::BadSignature));
        let other_ca = Tokens::load(dir.path(), b"other").unwrap();
        assert_eq!(other_ca.verify(&tok, 1000), Err(TokenError::WrongCa));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(86_400));
        assert_eq!(parse_duration("90m"), Ok(5400));
        assert_eq!(parse_duration("15"), Ok(15));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
