//! The interop versions of the draft, and what each one's messages look
//! like. A client names its version in every request
//! (`Upload-Draft-Interop-Version`); docs/api-resumable.md has the table.

use crate::protocol::kit::fields;
use actix_web::HttpRequest;

/// The interop version of the current draft (-12 to -15).
const LATEST: u8 = 9;
/// The oldest one still sent: iOS 17's (-01).
const OLDEST: u8 = 3;

/// The version a request speaks, and whether it named one this server
/// knows (only then may a 104 go out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interop {
    version: u8,
    pub named: bool,
}

impl Interop {
    /// The request's version; one missing or unknown is answered as the
    /// current draft, with no 104.
    pub fn of(req: &HttpRequest) -> Interop {
        let named = req
            .headers()
            .get("Upload-Draft-Interop-Version")
            .and_then(|v| v.to_str().ok())
            .and_then(fields::integer)
            .and_then(|v| u8::try_from(v).ok())
            .filter(|v| (OLDEST..=LATEST).contains(v));
        Interop {
            version: named.unwrap_or(LATEST),
            named: named.is_some(),
        }
    }

    pub fn number(self) -> u8 {
        self.version
    }

    /// The field that says whether an upload is complete: -01 had its
    /// inverse.
    fn completeness_field(self) -> &'static str {
        if self.version == 3 {
            "Upload-Incomplete"
        } else {
            "Upload-Complete"
        }
    }

    /// Whether the request says it completes the upload; None when it does
    /// not say (or not in this version's field).
    pub fn completes(self, req: &HttpRequest) -> Option<bool> {
        let value = req.headers().get(self.completeness_field())?;
        let flag = fields::boolean(value.to_str().ok()?)?;
        Some(flag != (self.version == 3))
    }

    /// The completeness field and its value, for a response.
    pub fn completeness(self, complete: bool) -> (&'static str, &'static str) {
        let flag = complete != (self.version == 3);
        (self.completeness_field(), if flag { "?1" } else { "?0" })
    }

    /// Appends carry `application/partial-upload` (since -04).
    pub fn requires_partial_upload_type(self) -> bool {
        self.version >= 6
    }

    /// `Upload-Limit`, `Upload-Length` in responses, and problem
    /// documents (RFC 9457) for refusals (since -04 and -05).
    pub fn has_limits_and_problems(self) -> bool {
        self.version >= 6
    }

    /// The inconsistent-length problem type (since -06).
    pub fn has_length_problem(self) -> bool {
        self.version >= 7
    }

    /// The `Upload-Limit` key of an upload's remaining lifetime: `expires`
    /// until -05, `max-age` since.
    pub fn age_key(self) -> &'static str {
        if self.version >= 7 {
            "max-age"
        } else {
            "expires"
        }
    }
}
