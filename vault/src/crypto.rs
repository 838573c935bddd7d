//! Key material and the few primitives the vault uses.
//!
//! Everything secret lives in [`Key32`] (a zeroizing 32-byte array with a
//! redacting `Debug`) or in `Zeroizing` buffers. The AEAD is AES-256-GCM with
//! a random 96-bit nonce stored in front of the ciphertext; associated data is
//! built by [`ad`] from length-prefixed parts so no two contexts can collide.

use std::fmt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::TryRngCore;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Length of the nonce stored in front of every sealed blob.
pub(crate) const NONCE_LEN: usize = 12;
/// Length of the GCM tag at the end of every sealed blob.
pub(crate) const TAG_LEN: usize = 16;
/// PBKDF2 iterations used for passphrases unless a test asks otherwise.
pub const DEFAULT_PBKDF2_ITERATIONS: u32 = 600_000;
/// The fewest PBKDF2 iterations a vault may ask for. Parameters below this are
/// refused wherever they are read ([`crate::Error::KdfWeakened`]): only someone
/// editing the file can put them there.
pub const MIN_PBKDF2_ITERATIONS: u32 = 600_000;
/// The shortest new passphrase accepted (characters), from a prompt or from
/// `SKILLBOX_PASSPHRASE` alike.
pub const MIN_PASSPHRASE_LEN: usize = 12;

/// Refuses a *new* passphrase shorter than [`MIN_PASSPHRASE_LEN`] characters.
/// The message names the rule, never the passphrase.
pub fn check_new_passphrase(passphrase: &str) -> Result<()> {
    if passphrase.chars().count() < MIN_PASSPHRASE_LEN {
        return Err(Error::InvalidMasterKey {
            reason: format!("use a passphrase of at least {MIN_PASSPHRASE_LEN} characters"),
        });
    }
    Ok(())
}

/// Refuses PBKDF2 parameters below the floor. `setting` names the stored key.
pub(crate) fn check_iterations(setting: &'static str, iterations: u32) -> Result<()> {
    if iterations < MIN_PBKDF2_ITERATIONS {
        return Err(Error::KdfWeakened { setting, found: iterations, minimum: MIN_PBKDF2_ITERATIONS });
    }
    Ok(())
}

/// HKDF `info` labels: one per job, so keys for different jobs are independent.
pub(crate) mod label {
    pub const MASTER_WRAP: &[u8] = b"skillbox-vault/v1/master-wrap";
    pub const KEY_CHECK: &[u8] = b"skillbox-vault/v1/key-check";
    pub const AUDIT_MAC: &[u8] = b"skillbox-vault/v1/audit-mac";
    pub const FINGERPRINT: &[u8] = b"skillbox-vault/v1/fingerprint";
    /// Sub-key of the audit key: MACs exported audit anchors and the anchor-file setting.
    pub const AUDIT_ANCHOR: &[u8] = b"skillbox-vault/v1/audit-anchor";
    /// Sub-key of the vault secret: MACs credentials, versions, grants and api_keys rows.
    pub const RECORD_MAC: &[u8] = b"skillbox-vault/v1/record-mac";
    /// Sub-key of the vault secret: the keyed hashes and fingerprints of API keys.
    pub const API_KEY: &[u8] = b"skillbox-vault/v1/api-key";
}

/// A 256-bit key. Zeroized on drop; `Debug` prints no bytes; no `Display`.
pub(crate) struct Key32(Zeroizing<[u8; 32]>);

impl Key32 {
    pub(crate) fn random() -> Result<Self> {
        let mut k = Zeroizing::new([0u8; 32]);
        fill_random(&mut k[..])?;
        Ok(Key32(k))
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut k = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return None;
        }
        k.copy_from_slice(bytes);
        Some(Key32(k))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// An AES-256-GCM instance keyed with this key (its key schedule is zeroized on drop).
    pub(crate) fn cipher(&self) -> Aes256Gcm {
        // Invariant: the slice is exactly 32 bytes, the AES-256 key size.
        Aes256Gcm::new_from_slice(&self.0[..]).expect("32-byte key")
    }

    /// HKDF-SHA256 sub-key of this key for one job.
    pub(crate) fn derive(&self, salt: &[u8], info: &[u8]) -> Key32 {
        let hk = Hkdf::<Sha256>::new(Some(salt), &self.0[..]);
        let mut out = Zeroizing::new([0u8; 32]);
        // Invariant: 32 bytes is far below HKDF-SHA256's 255*32 limit.
        hk.expand(info, &mut out[..]).expect("HKDF output length");
        Key32(out)
    }

    /// HMAC-SHA256 with this key over `parts` (concatenated).
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0[..]).expect("HMAC takes any key length");
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// Constant-time check of an HMAC-SHA256 tag.
    pub(crate) fn verify_mac(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let expected = self.mac(parts);
        expected.ct_eq(tag).into()
    }

    /// Constant-time equality with another key.
    pub(crate) fn ct_eq(&self, other: &[u8]) -> bool {
        self.0[..].ct_eq(other).into()
    }
}

impl fmt::Debug for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key32([REDACTED])")
    }
}

/// Fills `buf` from the operating system's CSPRNG.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<()> {
    OsRng.try_fill_bytes(buf).map_err(|e| Error::Random(e.to_string()))
}

/// `n` random bytes as lowercase hex (ids, salts).
pub(crate) fn random_hex(n: usize) -> Result<String> {
    let mut b = vec![0u8; n];
    fill_random(&mut b)?;
    Ok(hex::encode(b))
}

/// Associated data: a label, then each part with a 4-byte big-endian length in front.
pub(crate) fn ad(label: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(label.len() + 4 + parts.iter().map(|p| p.len() + 4).sum::<usize>());
    out.extend_from_slice(&(label.len() as u32).to_be_bytes());
    out.extend_from_slice(label.as_bytes());
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// Encrypts `plaintext` under `cipher` with a fresh random nonce; returns `nonce || ciphertext || tag`.
pub(crate) fn seal(cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut nonce_bytes = [0u8; NONCE_LEN];
    fill_random(&mut nonce_bytes)?;
    let nonce = Nonce::from(nonce_bytes);
    let ct = cipher
        .encrypt(&nonce, Payload { msg: plaintext, aad })
        .map_err(|_| Error::InvalidInput { what: "value", reason: "too large to encrypt".into() })?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens a blob made by [`seal`]. `None` when the blob is too short, was
/// altered, or was sealed with another key or associated data.
pub(crate) fn open(cipher: &Aes256Gcm, aad: &[u8], blob: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if blob.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (n, ct) = blob.split_at(NONCE_LEN);
    let nonce = Nonce::try_from(n).ok()?;
    cipher.decrypt(&nonce, Payload { msg: ct, aad }).ok().map(Zeroizing::new)
}

/// SHA-256 of the concatenation of `parts`.
pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Where the master key comes from.
///
/// The secret variants hold [`SecretString`]s, so `Debug` shows no key.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum MasterKeySource {
    /// 32 bytes as 64 hex characters (e.g. from `SKILLBOX_MASTER_KEY`).
    Hex(SecretString),
    /// A file holding 64 hex characters (whitespace ignored) or exactly 32 raw bytes.
    /// Refused unless its mode is 0600 or stricter.
    KeyFile(PathBuf),
    /// A passphrase, stretched with PBKDF2-HMAC-SHA256 using the salt and
    /// iteration count stored in the vault.
    Passphrase(SecretString),
}

impl MasterKeySource {
    /// A short, secret-free description for messages ("SKILLBOX_MASTER_KEY-style hex key", ...).
    pub fn describe(&self) -> &'static str {
        match self {
            MasterKeySource::Hex(_) => "a hex key",
            MasterKeySource::KeyFile(_) => "a key file",
            MasterKeySource::Passphrase(_) => "a passphrase",
        }
    }

    /// Refuses a new passphrase shorter than [`MIN_PASSPHRASE_LEN`]; raw keys pass.
    pub(crate) fn check_new(&self) -> Result<()> {
        match self {
            MasterKeySource::Passphrase(p) => check_new_passphrase(p.expose_secret()),
            _ => Ok(()),
        }
    }

    /// Reads the raw material: a 32-byte key, or the passphrase.
    pub(crate) fn material(&self) -> Result<Material> {
        match self {
            MasterKeySource::Hex(h) => Ok(Material::Raw(parse_hex_key(h.expose_secret())?)),
            MasterKeySource::KeyFile(path) => Ok(Material::Raw(read_key_file(path)?)),
            MasterKeySource::Passphrase(p) => {
                if p.expose_secret().is_empty() {
                    return Err(Error::InvalidMasterKey { reason: "the passphrase is empty".into() });
                }
                Ok(Material::Passphrase(p.clone()))
            }
        }
    }
}

/// Raw master key material before the vault's KDF parameters are applied.
pub(crate) enum Material {
    Raw(Key32),
    Passphrase(SecretString),
}

impl Material {
    /// The 32-byte master key: raw keys as they are, passphrases through PBKDF2.
    pub(crate) fn master_key(&self, kdf: Option<&KdfParams>) -> Option<Key32> {
        match (self, kdf) {
            (Material::Raw(k), _) => Some(Key32::from_slice(k.bytes()).expect("32 bytes")),
            (Material::Passphrase(p), Some(params)) => {
                let mut out = Zeroizing::new([0u8; 32]);
                pbkdf2::pbkdf2_hmac::<Sha256>(
                    p.expose_secret().as_bytes(),
                    &params.salt,
                    params.iterations,
                    &mut out[..],
                );
                Some(Key32(out))
            }
            (Material::Passphrase(_), None) => None,
        }
    }
}

/// PBKDF2 parameters stored in the vault for passphrase-derived master keys.
#[derive(Debug, Clone)]
pub(crate) struct KdfParams {
    pub salt: Vec<u8>,
    pub iterations: u32,
}

fn parse_hex_key(s: &str) -> Result<Key32> {
    let s = s.trim();
    if s.len() != 64 {
        return Err(Error::InvalidMasterKey {
            reason: format!("a hex master key must be 64 hex characters (32 bytes), got {} characters", s.len()),
        });
    }
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(s, &mut out[..]).map_err(|_| Error::InvalidMasterKey {
        reason: "a hex master key may contain only the characters 0-9 and a-f".into(),
    })?;
    Ok(Key32(out))
}

/// Reads a key file without following a symbolic link at its last component, and refuses one
/// that group or others may access; both checks run on the opened file (`cap_std`), not on a
/// second lookup of the path.
fn read_key_file(path: &Path) -> Result<Key32> {
    let io = |source| Error::Io { action: "reading key file", path: path.to_path_buf(), source };
    let invalid = |reason: String| Error::InvalidMasterKey { reason };
    let Some(name) = path.file_name() else {
        return Err(invalid(format!("key file {} does not name a file", path.display())));
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = cap_std::fs::Dir::open_ambient_dir(parent, cap_std::ambient_authority()).map_err(io)?;
    let link = dir.symlink_metadata(name).map_err(io)?;
    if link.file_type().is_symlink() {
        return Err(invalid(format!(
            "key file {} is a symbolic link; skillbox does not follow one to a key (whoever can change the \
             link chooses the key). Pass the file itself: --key-file {}",
            path.display(),
            std::fs::canonicalize(path).map_or_else(|_| "TARGET".into(), |t| t.display().to_string())
        )));
    }
    if !link.is_file() {
        return Err(invalid(format!("key file {} is not a regular file", path.display())));
    }
    let mut file = dir.open(name).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    #[cfg(unix)]
    {
        use cap_std::fs::MetadataExt;
        // The file opened must be the one checked above, not a link swapped in since.
        if (meta.dev(), meta.ino()) != (link.dev(), link.ino()) {
            return Err(invalid(format!("key file {} changed while it was being opened; try again", path.display())));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::KeyFilePermissions { path: path.to_path_buf(), mode });
        }
    }
    let _ = meta;
    // Room for the largest plausible key file, reserved up front so no reallocation leaves an
    // unwiped copy of the key behind.
    const MAX: u64 = 1024;
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX as usize + 1));
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, MAX + 1), &mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX {
        return Err(invalid(format!("key file {} is larger than any key file ({MAX} bytes at most)", path.display())));
    }
    if bytes.len() == 32 {
        return Ok(Key32::from_slice(&bytes).expect("32 bytes"));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| Error::InvalidMasterKey {
        reason: format!("key file {} must hold 64 hex characters or exactly 32 raw bytes", path.display()),
    })?;
    parse_hex_key(text).map_err(|_| Error::InvalidMasterKey {
        reason: format!("key file {} must hold 64 hex characters or exactly 32 raw bytes", path.display()),
    })
}

/// Writes a new random key file (64 hex chars and a newline), mode 0600,
/// refusing to overwrite. Returns nothing secret.
pub fn generate_key_file(path: &Path) -> Result<()> {
    let key = Key32::random()?;
    let text = Zeroizing::new(format!("{}\n", hex::encode(key.bytes())));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let io = |source| Error::Io { action: "creating key file", path: path.to_path_buf(), source };
    let mut f = opts.open(path).map_err(io)?;
    use std::io::Write;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}
