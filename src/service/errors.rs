//! Errors as the service answers them: `{ "error": { "code", "message" } }` with a status per
//! kind (docs/api.md, "Errors"); the codes are the library's (`Error::code`) plus the router's
//! own (`too-large`, `method-not-allowed`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use execroot::error::Error;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// `error.code`.
    pub code: &'static str,
    /// `error.message`.
    pub message: String,
}

impl ApiError {
    /// An answer with this status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }

    /// 400: the request is unacceptable (the message names the field).
    pub fn bad_input(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-input", message)
    }

    /// 500: the service itself failed (a worker panicked).
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

/// The status for each of the library's error codes.
pub fn status_of(e: &Error) -> StatusCode {
    match e.code() {
        "bad-input" => StatusCode::BAD_REQUEST,
        "forbidden" => StatusCode::FORBIDDEN,
        "not-found" => StatusCode::NOT_FOUND,
        "conflict" => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        ApiError { status: status_of(&e), code: e.code(), message: e.to_string() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let doc = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(doc)).into_response()
    }
}
