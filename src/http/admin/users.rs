//! Users (Argon2id passwords) and workspace members.

use actix_web::{web, HttpResponse};
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{existing_workspace, refuse_secrets, required_text};
use crate::domain::ids;
use crate::domain::workspace::{email_in_lower_case, is_plausible_email, Membership, Role, User};
use crate::http::error::{ApiError, ErrorKind};
use crate::http::extractors::{JsonBody, NoQuery};
use crate::http::openapi::ErrorBody;
use crate::http::state::AppState;
use crate::store::NewUser;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// An address as `local@domain`, checked for plausibility only (the `email` format is
    /// a hint): after trimming, at most 254 bytes, one `@`, a local part of 1 to 64 bytes,
    /// a domain with a dot and no empty label, no white space or control characters.
    /// Stored in lower case.
    #[schema(format = Email)]
    email: String,
    /// 8 to 256 characters, no control characters, not only spaces.
    #[schema(value_type = String, format = Password, min_length = 8, max_length = 256)]
    password: SecretString,
    /// 1 to 100 characters once leading and trailing white space is trimmed (as stored),
    /// none of them a control character.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
}

#[derive(Serialize, ToSchema)]
pub struct UserView {
    id: String,
    email: String,
    name: String,
    #[serde(serialize_with = "crate::domain::timestamp::rfc3339_millis")]
    created_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(user: User) -> UserView {
        UserView {
            id: user.id,
            email: user.email,
            name: user.name,
            created_at: user.created_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    user_id: String,
    /// `viewer`, `member`, `admin` or `owner`.
    #[schema(value_type = Role)]
    role: String,
}

#[derive(Serialize, ToSchema)]
pub struct MemberView {
    workspace_id: String,
    user_id: String,
    role: Role,
    /// The scopes this member can consent to.
    scopes: Vec<&'static str>,
    #[serde(serialize_with = "crate::domain::timestamp::rfc3339_millis")]
    created_at: DateTime<Utc>,
}

impl From<Membership> for MemberView {
    fn from(m: Membership) -> MemberView {
        MemberView {
            scopes: m.role.scopes().names(),
            workspace_id: m.workspace_id,
            user_id: m.user_id,
            role: m.role,
            created_at: m.created_at,
        }
    }
}

/// Creates a user. The password is stored only as an Argon2id hash.
#[utoipa::path(post, path = "/admin/v1/users", tag = "admin", operation_id = "create_user", request_body = CreateUser,
    responses((status = 201, body = UserView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn create(
    _no_query: NoQuery,
    state: web::Data<AppState>,
    body: JsonBody<CreateUser>,
) -> Result<HttpResponse, ApiError> {
    let JsonBody(body) = body;
    let not_an_address = || {
        ApiError::unprocessable(
            "invalid_email",
            "email must be an address like name@example.com.",
        )
    };
    let email = body.email.trim().to_owned();
    if !is_plausible_email(&email) {
        return Err(not_an_address());
    }
    refuse_secrets(&email, "invalid_email", "email", &state.admin_token)?;
    // Stored in lower case (Unicode's, not only ASCII's), as Ory Kratos stores addresses:
    // one address is one user whatever its case, and the unique index on `lower(email)`
    // then means the same on both stores (SQLite's `lower` folds ASCII letters only).
    // After the checks above, which must see the key or token as it was sent.
    let email = email_in_lower_case(&email);
    // Lower case can take more bytes (Ⱥ is two, ⱥ three).
    if !is_plausible_email(&email) {
        return Err(not_an_address());
    }
    let name = required_text(&body.name, "invalid_name", "name", 100, &state.admin_token)?;
    let password = body.password.expose_secret();
    if !(8..=256).contains(&password.chars().count()) {
        return Err(ApiError::unprocessable(
            "invalid_password",
            "password must be 8 to 256 characters.",
        ));
    }
    // Any printable character, spaces included (NIST SP 800-63B), but no control
    // characters, which no keyboard types and which a login form could not send back; nor
    // one made of spaces alone.
    if password.chars().any(char::is_control) || password.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_password",
            "password must not hold control characters or be only spaces.",
        ));
    }
    let password_hash = hash_password(body.password).await?;
    let user = NewUser {
        id: ids::new_id(ids::USER),
        email,
        name,
        password_hash,
        created_at: crate::clock::to_datetime(crate::clock::now_ms()),
    };
    let user = state.store.create_user(&user).await?;
    tracing::info!(user_id = %user.id, "user created");
    Ok(HttpResponse::Created().json(UserView::from(user)))
}

/// Adds a user to a workspace with a role.
#[utoipa::path(post, path = "/admin/v1/workspaces/{ws}/members", tag = "admin", request_body = AddMember,
    params(("ws" = String, Path, description = "workspace id")),
    responses((status = 201, body = MemberView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn add_member(
    _no_query: NoQuery,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: JsonBody<AddMember>,
) -> Result<HttpResponse, ApiError> {
    let JsonBody(body) = body;
    let role = Role::parse(&body.role).ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_role",
            "role must be viewer, member, admin or owner.",
        )
    })?;
    let workspace = existing_workspace(&state, &path).await?;
    if !ids::looks_like_id(&body.user_id, ids::USER) {
        return Err(ApiError::not_found("user_not_found", "No such user."));
    }
    let now = crate::clock::to_datetime(crate::clock::now_ms());
    let membership = state
        .store
        .add_member(&workspace.id, &body.user_id, role, now)
        .await?;
    Ok(HttpResponse::Created().json(MemberView::from(membership)))
}

/// Argon2id with the crate's defaults (19 MiB, 2 passes: OWASP's recommendation), on the
/// blocking pool so that it never stalls a request thread.
async fn hash_password(password: SecretString) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.expose_secret().as_bytes(), &salt)
            .map(|hash| hash.to_string())
    })
    .await
    .map_err(|_| ApiError::from(ErrorKind::Internal))?
    .map_err(|error| {
        tracing::error!(%error, "password hashing failed");
        ApiError::from(ErrorKind::Internal)
    })
}
