//! The caller of a request, from its connection's credentials: the library's [`Caller`], whose
//! rules (`execroot::root::caller`) every route applies. A connection whose credentials the
//! kernel did not give is refused outright.

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::StatusCode;
use execroot::root::caller::Caller;

use super::errors::ApiError;
use super::socket::Peer;

/// The caller of the request being served.
pub struct Who(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Who {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<ConnectInfo<Peer>>() {
            Some(ConnectInfo(Peer(Some(c)))) => Ok(Who(*c)),
            _ => Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "the caller's credentials are unknown")),
        }
    }
}
