//! The OpenAPI 3.1 document of both listeners, generated from the handlers' annotations.

use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{admin, public};

/// Every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, also sent as `X-Error`.
    error: String,
    /// Words for a person.
    message: String,
    /// The request's `X-Request-ID`.
    request_id: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "StatusPulse Auth",
        description = "Authentication engine for the StatusPulse API. The public paths are served on \
                       STATUSPULSE_PUBLIC_ADDR, the /admin/v1 paths on STATUSPULSE_ADMIN_ADDR."
    ),
    paths(
        public::me,
        public::authz,
        public::healthz,
        public::readyz,
        admin::workspaces::create,
        admin::workspaces::get,
        admin::api_keys::create,
        admin::api_keys::list,
        admin::api_keys::get,
        admin::api_keys::revoke,
        admin::api_keys::rotate,
        admin::users::create,
        admin::users::add_member,
        admin::audit_log::list,
    ),
    components(schemas(ErrorBody, crate::domain::audit::AuditEvent)),
    modifiers(&BearerSchemes)
)]
struct ApiDoc;

struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document as JSON.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn document_is_openapi_3_1_with_every_path() {
        let doc: serde_json::Value = serde_json::from_str(&super::document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for path in [
            "/v1/me",
            "/v1/authz",
            "/admin/v1/workspaces",
            "/admin/v1/workspaces/{ws}/api-keys/{id}/rotate",
            "/admin/v1/workspaces/{ws}/audit-log",
            "/admin/v1/users",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
    }
}
