//! Time: RFC 3339 in requests and records, seconds since the epoch inside.

use crate::error::RequestError;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Parse the request's `now`.
pub fn parse_now(text: &str) -> Result<i64, RequestError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| {
            RequestError::field(
                "now",
                format!(
                    "`{}` is not an RFC 3339 time: {e}",
                    crate::request::truncate(text)
                ),
            )
        })
}

/// The engine's clock, for requests without `now`.
pub fn clock_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Format seconds since the epoch as RFC 3339 (UTC).
pub fn format(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}
