//! Sending texts: the [`Gateway`] trait and its Twilio implementation (the REST API that
//! Twilio and several compatible providers speak), and the check of Twilio's webhook
//! signature.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use coachlibre_core::sms::SendPayload;
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

/// Why a text was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later (network, rate limit, provider down).
    #[error("{0}")]
    Retry(String),
    /// Will fail again (refused number, bad credentials): the job is dead-lettered.
    #[error("{0}")]
    Permanent(String),
}

/// Something that sends texts.
#[async_trait]
pub trait Gateway: Send + Sync + std::fmt::Debug {
    /// Send one text; returns the provider's message id.
    async fn send(&self, text: &SendPayload) -> Result<String, SendError>;
}

/// Twilio's Messages API (`POST {api_base}/2010-04-01/Accounts/{sid}/Messages.json`, basic
/// authentication with the account id and token).
#[derive(Debug, Clone)]
pub struct Twilio {
    client: reqwest::Client,
    api_base: String,
    account_sid: String,
    auth_token: String,
}

impl Twilio {
    /// A client of `api_base` (`https://api.twilio.com`, or a compatible provider's address).
    pub fn new(api_base: &str, account_sid: &str, auth_token: &str) -> Result<Self, SendError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("CoachLibre/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SendError::Permanent(format!("HTTP client: {e}")))?;
        Ok(Self {
            client,
            api_base: api_base.trim_end_matches('/').to_owned(),
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
        })
    }
}

#[derive(serde::Deserialize)]
struct Created {
    sid: String,
}

#[async_trait]
impl Gateway for Twilio {
    async fn send(&self, text: &SendPayload) -> Result<String, SendError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.api_base, self.account_sid
        );
        let form = [
            ("To", text.to.as_str()),
            ("From", text.from.as_str()),
            ("Body", text.body.as_str()),
        ];
        let resp = self
            .client
            .post(&url)
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .form(&form)
            .send()
            .await
            .map_err(|e| SendError::Retry(format!("the SMS gateway did not answer: {e}")))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status.is_success() {
            return serde_json::from_str::<Created>(&body)
                .map(|c| c.sid)
                .map_err(|e| SendError::Retry(format!("unexpected gateway answer: {e}")));
        }
        let detail: String = body.chars().take(300).collect();
        let message = format!("the SMS gateway answered {status}: {detail}");
        if status.as_u16() == 429 || status.is_server_error() {
            Err(SendError::Retry(message))
        } else {
            Err(SendError::Permanent(message))
        }
    }
}

/// Twilio's `X-Twilio-Signature`: base64 of HMAC-SHA1, keyed with the auth token, over the
/// full URL the webhook was called at followed by every form parameter's name and value,
/// sorted by name.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `signature` is Twilio's for this request (compared in constant time).
pub fn verify_twilio(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    let expected = twilio_signature(auth_token, url, params);
    !signature.is_empty() && bool::from(expected.as_bytes().ct_eq(signature.trim().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_signature_matches_twilios_documented_example() {
        // The example of Twilio's webhook security documentation.
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let p = params(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        let sig = twilio_signature("12345", url, &p);
        assert_eq!(sig, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert!(verify_twilio("12345", url, &p, &sig));
        // Order of the form does not matter; any change does.
        let mut shuffled = p.clone();
        shuffled.reverse();
        assert!(verify_twilio("12345", url, &shuffled, &sig));
        assert!(!verify_twilio("12346", url, &p, &sig));
        assert!(!verify_twilio(
            "12345",
            "https://mycompany.com/myapp.php",
            &p,
            &sig
        ));
        let mut changed = p.clone();
        changed[2].1 = "1235".into();
        assert!(!verify_twilio("12345", url, &changed, &sig));
        assert!(!verify_twilio("12345", url, &p, ""));
    }
}
