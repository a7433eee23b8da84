//! The OpenAPI 3.1 document of both listeners, generated from the handlers' annotations.

use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{admin, public};
use crate::domain::scope::ALL_SCOPES;

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

/// One of the eleven scope names, listed from the code's own table (a schema only: bodies
/// carry scopes as strings, and an unknown one is answered 422 naming it).
pub struct ScopeName;

impl utoipa::PartialSchema for ScopeName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(ALL_SCOPES.iter().map(|scope| scope.as_str())))
            .into()
    }
}

impl ToSchema for ScopeName {}

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
    modifiers(&BearerSchemes, &CommonAdminErrors)
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

/// The errors every admin operation can answer, which the handlers' annotations leave out:
/// 401 for the admin token, and for a body 400, 408, 413 and 415.
struct CommonAdminErrors;

impl Modify for CommonAdminErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        let admin_paths = openapi
            .paths
            .paths
            .iter_mut()
            .filter(|(path, _)| path.starts_with("/admin/"));
        for (_, item) in admin_paths {
            let operations = [&mut item.get, &mut item.post, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                let has_body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(description).into());
                };
                add("401", "no, or a wrong, admin token (`invalid_credentials`)");
                if has_body {
                    add("400", "a body that is not one JSON object of the documented fields (`invalid_body`)");
                    add(
                        "408",
                        "a body not whole 10 seconds after the head (`request_timeout`)",
                    );
                    add("413", "a body over 64 KiB (`body_too_large`)");
                    add(
                        "415",
                        "a body not declared as JSON (`unsupported_media_type`)",
                    );
                }
            }
        }
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
        let rotate = &doc["paths"]["/admin/v1/workspaces/{ws}/api-keys/{id}/rotate"]["post"];
        for status in ["400", "401", "413", "415", "422"] {
            assert!(
                rotate["responses"].get(status).is_some(),
                "rotate: {status}"
            );
        }
        let get = &doc["paths"]["/admin/v1/workspaces/{ws}"]["get"];
        assert!(get["responses"].get("401").is_some());
        assert!(get["responses"].get("415").is_none(), "no body, no 415");
    }
}
