//! Text messages: users' phone numbers, the tenant's numbers, and the gateway's webhook for
//! inbound texts.

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use coachlibre_core::Error;
use coachlibre_core::ids::{AgentId, UserId};
use coachlibre_core::sms::{PhoneNumber, SmsNumber};
use coachlibre_sms::{Inbound, Received};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Caller, Json, Path};
use crate::state::AppState;

/// A user's phone number.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Phone {
    /// E.164 (`+33612345678`); `null` when the user has none (or to remove it).
    #[schema(pattern = "^\\+[1-9][0-9]{7,14}$")]
    pub phone: Option<String>,
}

fn phone_view(p: Option<PhoneNumber>) -> Json<Phone> {
    Json(Phone {
        phone: p.map(|p| p.as_str().to_owned()),
    })
}

/// A user's phone number (whoever sees the user).
#[utoipa::path(get, path = "/api/v1/users/{id}/phone", tag = "sms",
    params(("id" = UserId, Path, description = "User id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The number, or null", body = Phone),
        (status = 404, description = "No such user visible to the caller", body = ErrorBody)))]
pub async fn get_phone(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<UserId>,
) -> ApiResult<Json<Phone>> {
    Ok(phone_view(state.sms.phone(&actor, id).await?))
}

/// Set or remove a user's phone number (the user, their coach or an admin). Written with
/// its country code; spaces, dots and dashes are dropped.
#[utoipa::path(put, path = "/api/v1/users/{id}/phone", tag = "sms", request_body = Phone,
    params(("id" = UserId, Path, description = "User id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "The number as stored", body = Phone),
        (status = 404, description = "No such user visible to the caller", body = ErrorBody),
        (status = 409, description = "Another user has this number", body = ErrorBody),
        (status = 422, description = "Not an international number", body = ErrorBody)))]
pub async fn put_phone(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<UserId>,
    Json(body): Json<Phone>,
) -> ApiResult<Json<Phone>> {
    Ok(phone_view(
        state
            .sms
            .set_phone(&actor, id, body.phone.as_deref())
            .await?,
    ))
}

/// A number to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNumber {
    /// The number, E.164 (`+33612345678`), as bought from the gateway.
    #[schema(pattern = "^\\+[1-9][0-9]{7,14}$")]
    pub number: String,
    /// The agent that answers texts to it (and whose texts leave from it).
    pub agent_id: AgentId,
}

/// The tenant's numbers (coaches and admins).
#[utoipa::path(get, path = "/api/v1/sms/numbers", tag = "sms", security(("bearer" = [])),
    responses((status = 200, description = "The numbers, oldest first", body = Vec<SmsNumber>)))]
pub async fn list_numbers(
    State(state): State<AppState>,
    Caller(actor): Caller,
) -> ApiResult<Json<Vec<SmsNumber>>> {
    Ok(Json(state.sms.numbers(&actor).await?))
}

/// Register one of the tenant's numbers, answered by an agent (admins).
#[utoipa::path(post, path = "/api/v1/sms/numbers", tag = "sms", request_body = NewNumber,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Registered", body = SmsNumber),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 409, description = "Already registered", body = ErrorBody),
        (status = 422, description = "Not an international number", body = ErrorBody)))]
pub async fn add_number(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Json(body): Json<NewNumber>,
) -> ApiResult<(StatusCode, Json<SmsNumber>)> {
    let n = state
        .sms
        .add_number(&actor, &body.number, body.agent_id)
        .await?;
    Ok((StatusCode::CREATED, Json(n)))
}

/// Remove one of the tenant's numbers (admins).
#[utoipa::path(delete, path = "/api/v1/sms/numbers/{number}", tag = "sms",
    params(("number" = String, Path, description = "The number, E.164 (`+` may be written %2B)")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such number", body = ErrorBody)))]
pub async fn remove_number(
    State(state): State<AppState>,
    Caller(actor): Caller,
    Path(number): Path<String>,
) -> ApiResult<StatusCode> {
    state.sms.remove_number(&actor, &number).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The empty TwiML answer: the reply is texted separately, once the agent has answered.
const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";

/// Inbound texts from Twilio (or a gateway speaking its webhook): a form signed with
/// `X-Twilio-Signature`. The text is queued for the number's agent and answered by a separate
/// text; the webhook answers at once with empty TwiML.
#[utoipa::path(post, path = "/api/v1/hooks/sms/twilio", tag = "sms",
    params(("X-Twilio-Signature" = String, Header, description = "The gateway's signature")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
        description = "Twilio's message form: From, To, Body, MessageSid, ..."),
    responses(
        (status = 200, description = "Accepted (empty TwiML)", content_type = "text/xml"),
        (status = 403, description = "Missing or wrong signature", body = ErrorBody),
        (status = 404, description = "SMS not configured, or a number no tenant has", body = ErrorBody),
        (status = 422, description = "A field is missing or malformed", body = ErrorBody)))]
pub async fn twilio_webhook(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    // Unsigned requests are refused before anything else is said.
    if !headers.contains_key("x-twilio-signature") {
        return Err(Error::Forbidden("the X-Twilio-Signature header is missing".into()).into());
    }
    let Some(token) = &state.config.sms.auth_token else {
        return Err(Error::not_found("SMS gateway").into());
    };
    let params: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|e| Error::invalid("body", format!("not a form: {e}")))?;
    let url = format!("{}{}", webhook_base(&state, &headers), uri);
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // Checked before anything is looked up.
    if !coachlibre_sms::verify_twilio(token.expose(), &url, &params, signature) {
        return Err(Error::Forbidden(
            "the X-Twilio-Signature header is missing or does not match this request".into(),
        )
        .into());
    }
    let field = |name: &'static str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| Error::invalid(name, "missing"))
    };
    let inbound = Inbound {
        from: field("From")?,
        to: field("To")?,
        // A phone's text is taken as sent, less invisible control characters that cannot be
        // stored (the sender cannot be asked to fix them).
        body: field("Body")
            .unwrap_or_default()
            .chars()
            .filter(|c| !coachlibre_core::text::is_forbidden(*c))
            .collect(),
        message_sid: field("MessageSid").or_else(|_| field("SmsSid"))?,
    };
    match state.sms.receive(&inbound).await? {
        Received::Queued { job_id } => tracing::info!(%job_id, "inbound text queued"),
        Received::UnknownSender | Received::Empty => {}
    }
    Ok(([(header::CONTENT_TYPE, "text/xml")], EMPTY_TWIML).into_response())
}

/// Scheme and host the gateway called: `sms.public_url` when set, else the request's own
/// (`https` only behind a trusted proxy that says so).
fn webhook_base(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(base) = &state.config.sms.public_url {
        return base.trim_end_matches('/').to_owned();
    }
    let https = crate::web::forwarded_https(state, headers);
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!("{}://{host}", if https { "https" } else { "http" })
}
