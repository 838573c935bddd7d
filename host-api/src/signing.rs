//! Implementation for the `skillbox:skill/signing` interface.
//!
//! The signer hands back an operation's result, never the key (as rustls'
//! `Signer` does): the guest sends a message, the host MACs it with the
//! `hmac_key` credential behind the handle, and only the MAC returns.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Sha256, Sha512};
use skillbox_vault::{AuditAction, SecretValue};
use wasmtime::component::Resource;

use crate::SkillCtxView;
use crate::bindings::skillbox::skill::signing::{self, Algorithm};
use crate::credentials::OpenCredential;
use crate::error::HostError;

/// Largest message the host will sign in one call.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

impl signing::Host for SkillCtxView<'_> {
    async fn hmac(
        &mut self,
        key: Resource<OpenCredential>,
        algorithm: Algorithm,
        message: Vec<u8>,
    ) -> Result<Vec<u8>, HostError> {
        if message.len() > MAX_MESSAGE {
            let message = format!("message of {} bytes is over the {MAX_MESSAGE}-byte signing limit", message.len());
            return Err(self.ctx.refuse(message));
        }
        // The tripwire: the MAC goes wherever the skill sends it, so the message is outbound.
        self.ctx.check_outbound("signing.hmac", &message)?;
        let open = self.table.get(&key)?;
        self.ctx.check_still_granted(open, "signing.hmac")?;
        let SecretValue::HmacKey(secret) = &open.value else {
            return Err(HostError::wrong_kind(format!(
                "credential `{}` is a {} credential; signing needs an hmac_key credential",
                open.name(),
                open.value.kind().as_str()
            )));
        };
        let key_bytes = crate::credentials::expose(&secret.key).as_bytes();
        let mac = match algorithm {
            Algorithm::HmacSha256 => mac::<Hmac<Sha256>>(key_bytes, &message),
            Algorithm::HmacSha512 => mac::<Hmac<Sha512>>(key_bytes, &message),
        };
        let (name, vault_ref, usage) = (open.name().to_owned(), open.vault_ref().clone(), open.usage().clone());
        let mut event = self.ctx.audit_event(AuditAction::Use, Some(&name), "signing.hmac");
        event.credential = Some(vault_ref);
        event.detail["algorithm"] = format!("{algorithm:?}").to_lowercase().into();
        event.detail["message_bytes"] = message.len().into();
        self.ctx.audit_use(&usage, event)?;
        Ok(mac)
    }
}

fn mac<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}
