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

/// The answer of `/healthz` and `/readyz` when they answer 200.
#[derive(Serialize, ToSchema)]
pub struct HealthBody {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    status: String,
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

/// The name of a scope a route can require, as audit events record it: the eleven scope
/// names and `billing:write`, which writes to `/v1/billing` require and no key can hold.
pub struct RequiredScopeName;

impl utoipa::PartialSchema for RequiredScopeName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let names = ALL_SCOPES
            .iter()
            .map(|scope| scope.as_str())
            .chain(["billing:write"]);
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(names))
            .into()
    }
}

impl ToSchema for RequiredScopeName {}

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
    components(schemas(ErrorBody, HealthBody, crate::domain::audit::AuditEvent)),
    modifiers(&BearerSchemes, &CommonErrors)
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

/// The errors that the handlers' annotations leave out, and the words for those they list
/// without any (an operation's own words win). Every operation: 400, 414 and 431 for a request the HTTP layer refuses,
/// and 408 for a head not whole in time; with a body also 400 for the body, 408 for a slow
/// one, 413 and 415. Every admin operation also: 401 for the admin token, and 503 when
/// storage cannot be reached.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use std::collections::btree_map::Entry;
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
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
        for (path, item) in openapi.paths.paths.iter_mut() {
            let on_admin = path.starts_with("/admin/");
            let operations = [&mut item.get, &mut item.post, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                let has_body = operation.request_body.is_some();
                // `extractors::NoQuery`: admin operations without query parameters refuse any.
                let takes_query = operation.parameters.iter().flatten().any(|parameter| {
                    parameter.parameter_in == utoipa::openapi::path::ParameterIn::Query
                });
                let query = if on_admin && !takes_query {
                    "a query string (`invalid_query`: this operation takes no parameters), "
                } else {
                    ""
                };
                let responses = &mut operation.responses.responses;
                // A status the operation lists keeps its own words, if it has any.
                let mut add =
                    |status: &str, description: &str| match responses.entry(status.to_owned()) {
                        Entry::Vacant(entry) => {
                            entry.insert(error(description).into());
                        }
                        Entry::Occupied(mut entry) => {
                            if let RefOr::T(response) = entry.get_mut() {
                                if response.description.is_empty() {
                                    response.description = description.to_owned();
                                }
                            }
                        }
                    };
                if has_body {
                    add(
                        "400",
                        &format!(
                            "a body that is not one JSON object of the documented fields \
                             (`invalid_body`), {query}or a request that is not HTTP/1.1 \
                             (`malformed_request`)"
                        ),
                    );
                    add(
                        "408",
                        "a request head not whole within 5 seconds, or a body not whole 10 \
                         seconds after the head (`request_timeout`)",
                    );
                    add("413", "a body over 64 KiB (`body_too_large`)");
                    add(
                        "415",
                        "a body not declared as JSON (`unsupported_media_type`)",
                    );
                }
                add(
                    "400",
                    &format!(
                        "{query}a request that is not HTTP/1.1: a bad request line, header \
                         syntax or framing (`malformed_request`)"
                    ),
                );
                add(
                    "408",
                    "a request head not whole within 5 seconds (`request_timeout`)",
                );
                add("414", "a request target over 8 KiB (`uri_too_long`)");
                add(
                    "431",
                    "header fields over 16 KiB in all, or more than 96 of them (`headers_too_large`)",
                );
                if on_admin {
                    add("401", "no, or a wrong, admin token (`invalid_credentials`)");
                    add(
                        "503",
                        "storage cannot be reached, or cannot write; nothing is changed (`unavailable`)",
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
    /// `/metrics` counts the admin listener's answers by path: every admin path has its
    /// label (one left out would be counted as `other`).
    #[test]
    fn every_admin_path_has_a_metrics_label() {
        let doc: serde_json::Value = serde_json::from_str(&super::document()).unwrap();
        let admin_paths: Vec<&String> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|path| path.starts_with("/admin/"))
            .collect();
        assert!(admin_paths.len() >= 8, "{admin_paths:?}");
        for path in admin_paths {
            assert!(
                crate::metrics::AdminRoute::labelled(path).is_some(),
                "{path} has no label"
            );
        }
    }

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
        for status in ["401", "414", "431", "503"] {
            assert!(get["responses"].get(status).is_some(), "get: {status}");
        }
        assert!(get["responses"].get("415").is_none(), "no body, no 415");
        let create = &doc["paths"]["/admin/v1/workspaces"]["post"]["responses"];
        for (status, says) in [("400", "invalid_body"), ("408", "body not whole")] {
            let description = create[status]["description"].as_str().unwrap_or_default();
            assert!(description.contains(says), "create {status}: {description}");
        }
        // Operations without query parameters say that they refuse them; the lists do not.
        for (path, method) in [
            ("/admin/v1/workspaces/{ws}", "get"),
            ("/admin/v1/workspaces", "post"),
            ("/admin/v1/workspaces/{ws}/api-keys/{id}", "delete"),
        ] {
            let description = doc["paths"][path][method]["responses"]["400"]["description"]
                .as_str()
                .unwrap_or_default();
            assert!(
                description.contains("invalid_query"),
                "{method} {path}: {description}"
            );
        }
        let list = doc["paths"]["/admin/v1/workspaces/{ws}/api-keys"]["get"]["responses"]["400"]
            ["description"]
            .as_str()
            .unwrap_or_default();
        assert!(
            !list.contains("this operation takes no parameters"),
            "{list}"
        );
        let me = &doc["paths"]["/v1/me"]["get"];
        for status in ["400", "414", "431"] {
            assert!(me["responses"].get(status).is_some(), "me: {status}");
        }
        // Absent, `required` is false.
        assert_ne!(
            rotate["requestBody"]["required"],
            serde_json::json!(true),
            "rotate's body is optional"
        );
        assert!(
            doc["paths"]["/healthz"]["get"]["responses"]["200"]["content"]
                .get("application/json")
                .is_some()
        );
    }
}
