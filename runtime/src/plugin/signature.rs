//! Ed25519 signatures over a plugin file's sha256, kept in a detached file beside it.
//!
//! Guards against running a component nobody the operator trusts has vouched for: a plugin
//! whose config sets `signed_by` is refused before it is compiled unless `FILE.wasm.sig` holds a
//! valid signature, by one of those keys, over the file exactly as it is on disk. A changed
//! byte, a missing or garbled `.sig`, or a signature by a key not listed is a load error.
//!
//! Why detached: wasmsign2's format embeds the signature in a custom section of the module, and
//! neither its crate nor its component-model support is available to this build (offline).
//! A detached file also keeps the signed bytes identical to the bytes that are compiled and
//! hashed: nothing has to be stripped before verifying, so the digest pinned with `sha256`, the
//! digest signed, and the digest the compile cache is keyed by are one and the same.
//!
//! What is signed is the domain-separated message `"pganalytics plugin v1\n" + hex(sha256)`,
//! so a signature made with the same key for another purpose can never pass as a plugin's.
//!
//! Formats (UTF-8 text, `BASE64` is standard base64 with padding):
//!
//! ```text
//! FILE.wasm.sig      one block per signature, blocks may repeat, blank lines are ignored:
//!                      pganalytics-signature-v1
//!                      KEY-NAME
//!                      BASE64(64-byte Ed25519 signature)
//! NAME.pub           pganalytics-ed25519-pub NAME BASE64(32-byte public key)
//! NAME.key           pganalytics-ed25519-key NAME BASE64(32-byte secret seed)   (mode 0600)
//! ```
//!
//! This module never decides trust by a key's name alone: a signature block only names the key
//! to try; it counts only when it verifies against a public key the config lists for the plugin.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// First line of each block of a `.sig` file.
pub const SIGNATURE_MAGIC: &str = "pganalytics-signature-v1";
/// First word of a public key file.
pub const PUBLIC_KEY_MAGIC: &str = "pganalytics-ed25519-pub";
/// First word of a secret key file.
pub const SECRET_KEY_MAGIC: &str = "pganalytics-ed25519-key";
/// Prefix of the signed message; the version changes if what is signed ever changes.
const MESSAGE_DOMAIN: &str = "pganalytics plugin v1\n";

/// Threat: a huge `.sig` or key file read into memory before anything is checked.
pub const MAX_SIGNATURE_FILE_BYTES: u64 = 64 << 10;

/// The `.sig` file of a component: `FILE.wasm` → `FILE.wasm.sig`.
pub fn signature_path(wasm: &Path) -> PathBuf {
    let mut path = wasm.as_os_str().to_owned();
    path.push(".sig");
    PathBuf::from(path)
}

/// The message a signature covers, for a file with this sha256.
pub fn message(sha256: &[u8; 32]) -> Vec<u8> {
    format!("{MESSAGE_DOMAIN}{}", hex::encode(sha256)).into_bytes()
}

/// Key names appear in file names and in the `.sig` format: letters, digits, `_`, `-`, `.`.
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A public key with the name it is known by.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub name: String,
    pub key: VerifyingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PublicKey({} {})",
            self.name,
            BASE64.encode(self.key.as_bytes())
        )
    }
}

impl PublicKey {
    /// Parses the one-line public key format.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, bytes) = parse_key_line(text, PUBLIC_KEY_MAGIC)?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| "the key is not a valid Ed25519 public key".to_owned())?;
        Ok(Self { name, key })
    }

    pub fn read(path: &Path) -> Result<Self, String> {
        Self::parse(&read_small(path)?).map_err(|why| format!("`{}`: {why}", path.display()))
    }

    pub fn to_file_text(&self) -> String {
        format!(
            "{PUBLIC_KEY_MAGIC} {} {}\n",
            self.name,
            BASE64.encode(self.key.as_bytes())
        )
    }
}

/// A signing key. Its file must stay private to whoever signs plugins.
pub struct SecretKey {
    pub name: String,
    key: SigningKey,
}

impl SecretKey {
    /// A new key from the operating system's random source.
    pub fn generate(name: &str) -> Result<Self, String> {
        use rand::TryRngCore;
        if !valid_key_name(name) {
            return Err(format!(
                "`{name}` is not a key name (letters, digits, `_`, `-`, `.`)"
            ));
        }
        let mut seed = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut seed)
            .map_err(|e| format!("no randomness from the operating system: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, seed) = parse_key_line(text, SECRET_KEY_MAGIC)?;
        Ok(Self {
            name,
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn read(path: &Path) -> Result<Self, String> {
        Self::parse(&read_small(path)?).map_err(|why| format!("`{}`: {why}", path.display()))
    }

    pub fn to_file_text(&self) -> String {
        format!(
            "{SECRET_KEY_MAGIC} {} {}\n",
            self.name,
            BASE64.encode(self.key.to_bytes())
        )
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs a file with this sha256.
    pub fn sign(&self, sha256: &[u8; 32]) -> SignatureBlock {
        SignatureBlock {
            key_name: self.name.clone(),
            signature: self.key.sign(&message(sha256)),
        }
    }
}

/// One signature of a `.sig` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureBlock {
    /// The key that claims to have signed; only a hint of which trusted key to verify with.
    pub key_name: String,
    pub signature: Signature,
}

/// The parsed `.sig` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignatureFile {
    pub blocks: Vec<SignatureBlock>,
}

impl SignatureFile {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, line)| (i + 1, line.trim()))
            .filter(|(_, line)| !line.is_empty());
        let mut blocks = Vec::new();
        while let Some((number, magic)) = lines.next() {
            if magic != SIGNATURE_MAGIC {
                return Err(format!(
                    "line {number}: expected `{SIGNATURE_MAGIC}`, found `{}`",
                    shorten(magic)
                ));
            }
            let (Some((_, key_name)), Some((sig_line, encoded))) = (lines.next(), lines.next())
            else {
                return Err(format!(
                    "line {number}: the block is cut short (it needs a key name and a signature)"
                ));
            };
            if !valid_key_name(key_name) {
                return Err(format!(
                    "line {}: `{}` is not a key name",
                    number + 1,
                    shorten(key_name)
                ));
            }
            let bytes: [u8; 64] = BASE64
                .decode(encoded)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    format!("line {sig_line}: not a base64 Ed25519 signature (64 bytes)")
                })?;
            blocks.push(SignatureBlock {
                key_name: key_name.to_owned(),
                signature: Signature::from_bytes(&bytes),
            });
        }
        if blocks.is_empty() {
            return Err("it holds no signature".into());
        }
        Ok(Self { blocks })
    }

    pub fn read(path: &Path) -> Result<Self, ReadSignatureError> {
        let text = match read_small(path) {
            Ok(text) => text,
            Err(why) if !path.exists() => return Err(ReadSignatureError::Missing(why)),
            Err(why) => return Err(ReadSignatureError::Malformed(why)),
        };
        Self::parse(&text).map_err(ReadSignatureError::Malformed)
    }

    /// Adds a block, replacing an earlier one by the same key (a re-signed file).
    pub fn add(&mut self, block: SignatureBlock) {
        self.blocks.retain(|b| b.key_name != block.key_name);
        self.blocks.push(block);
    }

    pub fn to_file_text(&self) -> String {
        self.blocks
            .iter()
            .map(|b| {
                format!(
                    "{SIGNATURE_MAGIC}\n{}\n{}\n",
                    b.key_name,
                    BASE64.encode(b.signature.to_bytes())
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// What each block's signature says about a file with `sha256`, given the `trusted` keys.
    pub fn check(&self, sha256: &[u8; 32], trusted: &[&PublicKey]) -> Vec<(String, BlockStatus)> {
        let message = message(sha256);
        self.blocks
            .iter()
            .map(|block| {
                let status = match trusted.iter().find(|k| k.name == block.key_name) {
                    None => BlockStatus::UnknownKey,
                    Some(key) => match key.key.verify_strict(&message, &block.signature) {
                        Ok(()) => BlockStatus::Valid,
                        Err(_) => BlockStatus::Invalid,
                    },
                };
                (block.key_name.clone(), status)
            })
            .collect()
    }

    /// The first key of `trusted` with a valid signature over a file with `sha256`.
    pub fn verify(&self, sha256: &[u8; 32], trusted: &[&PublicKey]) -> Result<String, Rejection> {
        let results = self.check(sha256, trusted);
        if let Some((key, _)) = results.iter().find(|(_, s)| *s == BlockStatus::Valid) {
            return Ok(key.clone());
        }
        let invalid: Vec<String> = results
            .iter()
            .filter(|(_, s)| *s == BlockStatus::Invalid)
            .map(|(k, _)| k.clone())
            .collect();
        if !invalid.is_empty() {
            return Err(Rejection::BadSignature { keys: invalid });
        }
        Err(Rejection::UntrustedSigners {
            found: results.into_iter().map(|(k, _)| k).collect(),
            trusted: trusted.iter().map(|k| k.name.clone()).collect(),
        })
    }
}

/// What one signature block amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockStatus {
    /// Verifies with the trusted key of that name.
    Valid,
    /// A trusted key of that name exists, and the signature does not match the file.
    Invalid,
    /// No trusted key has that name.
    UnknownKey,
}

impl fmt::Display for BlockStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockStatus::Valid => "valid",
            BlockStatus::Invalid => {
                "INVALID: does not match the file (tampered, or signed over another file)"
            }
            BlockStatus::UnknownKey => "not checked: no trusted key of that name",
        })
    }
}

/// Why a `.sig` file does not vouch for a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error(
        "the signature by {} does not match the file (the file was changed after signing, or the signature is for another file)",
        names(keys)
    )]
    BadSignature { keys: Vec<String> },
    #[error(
        "it is signed only by {}, and none of them is trusted for it (trusted: {})",
        names(found),
        names(trusted)
    )]
    UntrustedSigners {
        found: Vec<String>,
        trusted: Vec<String>,
    },
}

/// Why a `.sig` file could not be used at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadSignatureError {
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Malformed(String),
}

fn names(list: &[String]) -> String {
    if list.is_empty() {
        return "none".into();
    }
    list.iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn shorten(text: &str) -> String {
    text.chars().take(40).collect()
}

/// `MAGIC NAME BASE64` with a 32-byte payload.
fn parse_key_line(text: &str, magic: &str) -> Result<(String, [u8; 32]), String> {
    let mut words = text.split_whitespace();
    if words.next() != Some(magic) {
        return Err(format!("it does not start with `{magic}`"));
    }
    let (Some(name), Some(encoded), None) = (words.next(), words.next(), words.next()) else {
        return Err(format!("expected one line `{magic} NAME BASE64`"));
    };
    if !valid_key_name(name) {
        return Err(format!("`{}` is not a key name", shorten(name)));
    }
    let bytes: [u8; 32] = BASE64
        .decode(encoded)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "the key is not 32 bytes of base64".to_owned())?;
    Ok((name.to_owned(), bytes))
}

fn read_small(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_SIGNATURE_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    if text.len() as u64 > MAX_SIGNATURE_FILE_BYTES {
        return Err(format!(
            "`{}` is over {MAX_SIGNATURE_FILE_BYTES} bytes",
            path.display()
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> SecretKey {
        SecretKey::generate(name).unwrap()
    }

    #[test]
    fn a_signature_verifies_only_for_the_signed_digest_and_a_trusted_key() {
        let (alice, mallory) = (key("alice"), key("mallory"));
        let digest = [7u8; 32];
        let mut file = SignatureFile::default();
        file.add(alice.sign(&digest));
        let alice_pub = alice.public();
        assert_eq!(file.verify(&digest, &[&alice_pub]).unwrap(), "alice");

        let mut tampered = digest;
        tampered[0] ^= 1;
        assert_eq!(
            file.verify(&tampered, &[&alice_pub]),
            Err(Rejection::BadSignature {
                keys: vec!["alice".into()]
            })
        );

        let mallory_pub = mallory.public();
        let mut forged = SignatureFile::default();
        forged.add(mallory.sign(&digest));
        let err = forged.verify(&digest, &[&alice_pub]).unwrap_err();
        assert!(matches!(err, Rejection::UntrustedSigners { .. }), "{err}");
        assert!(err.to_string().contains("`mallory`"), "{err}");

        // Mallory naming her key `alice` gets nowhere: the trusted alice key does not verify it.
        let impostor =
            SecretKey::parse(&mallory.to_file_text().replace("key mallory ", "key alice "))
                .unwrap();
        let mut claimed = SignatureFile::default();
        claimed.add(impostor.sign(&digest));
        assert!(matches!(
            claimed.verify(&digest, &[&alice_pub]),
            Err(Rejection::BadSignature { .. })
        ));
        // Any one trusted signer suffices.
        forged.add(alice.sign(&digest));
        assert_eq!(
            forged.verify(&digest, &[&mallory_pub, &alice_pub]).unwrap(),
            "mallory"
        );
    }

    #[test]
    fn the_domain_separates_the_message_from_a_bare_digest() {
        let alice = key("alice");
        let digest = [1u8; 32];
        let bare = alice.key.sign(&hex::encode(digest).into_bytes());
        let file = SignatureFile {
            blocks: vec![SignatureBlock {
                key_name: "alice".into(),
                signature: bare,
            }],
        };
        assert!(file.verify(&digest, &[&alice.public()]).is_err());
        assert!(message(&digest).starts_with(b"pganalytics plugin v1\n"));
    }

    #[test]
    fn files_round_trip_and_garbage_is_named() {
        let alice = key("alice");
        let public = PublicKey::parse(&alice.public().to_file_text()).unwrap();
        assert_eq!(public, alice.public());
        let again = SecretKey::parse(&alice.to_file_text()).unwrap();
        assert_eq!(again.public(), public);

        let mut file = SignatureFile::default();
        file.add(alice.sign(&[2; 32]));
        file.add(key("bob").sign(&[2; 32]));
        file.add(alice.sign(&[2; 32]));
        assert_eq!(file.blocks.len(), 2, "re-signing replaces the key's block");
        let text = file.to_file_text();
        assert_eq!(SignatureFile::parse(&text).unwrap(), file);

        for (bad, why) in [
            ("", "no signature"),
            ("hello\n", "expected `pganalytics-signature-v1`"),
            ("pganalytics-signature-v1\nalice\n", "cut short"),
            ("pganalytics-signature-v1\nal ice\nAAAA\n", "not a key name"),
            (
                "pganalytics-signature-v1\nalice\nAAAA\n",
                "not a base64 Ed25519",
            ),
        ] {
            let err = SignatureFile::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(
            PublicKey::parse("pganalytics-ed25519-pub a AAAA")
                .unwrap_err()
                .contains("32 bytes")
        );
        assert!(
            PublicKey::parse(&alice.to_file_text())
                .unwrap_err()
                .contains("does not start")
        );
        assert_eq!(
            signature_path(Path::new("/x/a.wasm")),
            Path::new("/x/a.wasm.sig")
        );
    }
}
