//! SCIM provisioning: users and groups created, changed, deactivated and
//! deleted by an organization's identity provider. Deactivating or deleting
//! a user deprovisions them in one transaction: membership removed, the keys
//! they own revoked, their sessions ended, published on the change feed.

use serde_json::{json, Value};

use super::{audited, Audited};
use crate::core::audit::Actor;
use crate::core::changes::Change as Notice;
use crate::core::identity::{self, Mapping, Synced};
use crate::core::scim::{self, ScimGroup, ScimUser};
use crate::core::state::AppState;
use crate::core::{members, orgs, projects, users};
use crate::error::AppError;
use crate::policy::{OrgRole, OrgScope};

/// Who provisions: the token's organization (as a scope the policy granted),
/// the audit actor, and the mapping of the token's connection.
pub struct Provisioner {
    pub scope: OrgScope,
    pub actor: Actor,
    pub mapping: Mapping,
}

/// A user as the SCIM layer parsed it (schema-checked attributes).
pub struct UserInput {
    pub user_name: String,
    pub external_id: Option<String>,
    /// `None`: not given (a new user is active; a replaced one keeps its state).
    pub active: Option<bool>,
    pub attributes: Value,
    /// The account's email: the primary email, else the first, else a
    /// userName that is an email.
    pub email: String,
    /// The account's display name.
    pub name: String,
}

fn org(p: &Provisioner) -> &str {
    p.scope.org_id()
}

/// Creates a SCIM user: links the account with that email (keeping an
/// existing member's role) or creates it without a password, and makes it a
/// member with the mapping's default role when active.
pub async fn create_user(
    state: &AppState,
    p: &Provisioner,
    input: UserInput,
) -> Result<ScimUser, AppError> {
    let mut op = Audited::begin(state).await?;
    orgs::lock(&mut op.tx, org(p)).await?;
    let email = crate::core::domain::Email::parse("emails", &input.email)?;
    let found = users::by_email(&mut op.tx, &email).await?;
    let linked = found.is_some();
    let account = match found {
        Some(u) => {
            if scim::user_for_account(&mut op.tx, org(p), &u.id)
                .await?
                .is_some()
            {
                return Err(AppError::conflict(
                    "a user with this email already exists in this organization",
                ));
            }
            // An account bound to another organization is not taken over.
            if identity::belongs_elsewhere(&mut op.tx, &u.id, org(p)).await? {
                return Err(AppError::conflict(
                    "an account with this email already exists and belongs to another organization",
                ));
            }
            u
        }
        None => {
            let name = crate::core::domain::PersonName::parse("name", &input.name)
                .or_else(|_| crate::core::domain::PersonName::parse("name", &input.user_name))?;
            users::insert(&mut op.tx, &email, &name, "", op.now).await?
        }
    };
    let existing = members::membership(&mut op.tx, &account.id, org(p)).await?;
    let active = input.active.unwrap_or(true);
    let mut role = existing.as_ref().map_or(p.mapping.default_role, |m| m.role);
    let mut synced = Synced::default();
    if active && existing.is_none() {
        let granted = p.mapping.resolve(&[]);
        synced = identity::sync_member(
            &mut op.tx,
            org(p),
            &account.id,
            &p.mapping,
            &granted,
            "scim",
            op.now,
        )
        .await?;
        role = synced.role.unwrap_or(role);
    }
    let mut revoked = 0;
    let deprovisioned = !active && existing.is_some();
    if deprovisioned {
        let draft = ScimUser {
            id: String::new(),
            org_id: org(p).to_owned(),
            user_id: account.id.clone(),
            user_name: input.user_name.clone(),
            external_id: None,
            active: true,
            role,
            attributes: Value::Null,
            version: 0,
            created_at: op.now,
            updated_at: op.now,
        };
        revoked = deprovision(&mut op, p, &draft).await?.1;
    }
    let user = ScimUser {
        id: crate::core::new_id(),
        org_id: org(p).to_owned(),
        user_id: account.id.clone(),
        user_name: input.user_name,
        external_id: input.external_id,
        active,
        role,
        attributes: input.attributes,
        version: 1,
        created_at: op.now,
        updated_at: op.now,
    };
    scim::insert_user(&mut op.tx, &user).await?;
    let change = audited(
        &p.scope,
        "scim.user_created",
        "user",
        &account.id,
        None,
        Some(json!({
            "scim_id": user.id, "userName": user.user_name, "email": account.email,
            "active": user.active, "role": role, "linked_existing_account": linked,
            "kept_role": synced.kept_role, "keys_revoked": revoked,
        })),
    );
    let notice = deprovisioned.then(|| Notice::OrgAll(org(p).to_owned()));
    op.finish(&p.actor, change, notice).await?;
    Ok(user)
}

/// What a PATCH refused because the resource changed since it was read
/// (the caller reads it again and retries).
pub const STALE: &str = "the resource changed while this request was applied; send it again";

/// Replaces a SCIM user's attributes (PUT, and PATCH once applied: then
/// `version` is the one the patch was applied to). A change of `active`
/// deprovisions or reactivates the member.
pub async fn replace_user(
    state: &AppState,
    p: &Provisioner,
    id: &str,
    input: UserInput,
    version: Option<i64>,
) -> Result<ScimUser, AppError> {
    let mut op = Audited::begin(state).await?;
    orgs::lock(&mut op.tx, org(p)).await?;
    let before = scim::user(&mut op.tx, org(p), id)
        .await?
        .ok_or_else(|| AppError::not_found("user"))?;
    if version.is_some_and(|v| v != before.version) {
        return Err(AppError::conflict(STALE));
    }
    let mut user = before.clone();
    user.user_name = input.user_name;
    user.external_id = input.external_id;
    user.attributes = input.attributes;
    user.active = input.active.unwrap_or(before.active);
    user.version = user.version.saturating_add(1);
    user.updated_at = op.now;
    let mut notice = None;
    match (before.active, user.active) {
        (true, false) => {
            let (role, revoked) = deprovision(&mut op, p, &before).await?;
            user.role = role;
            let change = audited(
                &p.scope,
                "scim.user_deactivated",
                "user",
                &before.user_id,
                Some(
                    json!({ "scim_id": before.id, "userName": before.user_name, "active": true, "role": role }),
                ),
                Some(
                    json!({ "active": false, "membership_removed": true, "keys_revoked": revoked, "sessions_ended": true }),
                ),
            );
            op.record(&p.actor, change).await?;
            notice = Some(Notice::OrgAll(org(p).to_owned()));
        }
        (false, true) => {
            let synced = reactivate(&mut op, p, &user).await?;
            user.role = synced.role.unwrap_or(user.role);
            let change = audited(
                &p.scope,
                "scim.user_reactivated",
                "user",
                &before.user_id,
                Some(json!({ "scim_id": before.id, "active": false })),
                Some(
                    json!({ "active": true, "role": user.role, "projects": synced.projects_joined,
                             "note": "keys revoked at deactivation stay revoked" }),
                ),
            );
            op.record(&p.actor, change).await?;
        }
        _ => {}
    }
    scim::update_user(&mut op.tx, &user).await?;
    let change = audited(
        &p.scope,
        "scim.user_updated",
        "user",
        &before.user_id,
        Some(json!({ "userName": before.user_name, "externalId": before.external_id })),
        Some(
            json!({ "userName": user.user_name, "externalId": user.external_id, "active": user.active }),
        ),
    );
    op.finish(&p.actor, change, notice).await?;
    Ok(user)
}

/// Deletes a SCIM user; an active one is deprovisioned first.
pub async fn delete_user(state: &AppState, p: &Provisioner, id: &str) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    orgs::lock(&mut op.tx, org(p)).await?;
    let before = scim::user(&mut op.tx, org(p), id)
        .await?
        .ok_or_else(|| AppError::not_found("user"))?;
    let groups = scim::groups_of_user(&mut op.tx, id).await?;
    let mut revoked = 0;
    if before.active {
        revoked = deprovision(&mut op, p, &before).await?.1;
    }
    scim::delete_user(&mut op.tx, org(p), id).await?;
    let change = audited(
        &p.scope,
        "scim.user_deleted",
        "user",
        &before.user_id,
        Some(
            json!({ "scim_id": before.id, "userName": before.user_name, "active": before.active,
                     "groups": groups.iter().map(|g| &g.1).collect::<Vec<_>>() }),
        ),
        Some(
            json!({ "membership_removed": before.active, "keys_revoked": revoked, "sessions_ended": before.active }),
        ),
    );
    op.finish(&p.actor, change, Some(Notice::OrgAll(org(p).to_owned())))
        .await
}

/// Cuts a member's access: membership and project memberships removed,
/// the keys they own in the organization revoked (service keys and other
/// people's keys untouched), their sessions ended. Returns the role they had
/// and how many keys were revoked. The last owner is never removed.
async fn deprovision(
    op: &mut Audited<'_>,
    p: &Provisioner,
    user: &ScimUser,
) -> Result<(OrgRole, u64), AppError> {
    let member = members::membership(&mut op.tx, &user.user_id, org(p)).await?;
    let role = member.as_ref().map_or(user.role, |m| m.role);
    if member.as_ref().is_some_and(|m| m.role == OrgRole::Owner) {
        let owners: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM org_members WHERE org_id = $1 AND role = 'owner'",
        )
        .bind(org(p))
        .fetch_one(&mut *op.tx)
        .await?;
        if owners <= 1 {
            return Err(AppError::conflict(
                "this user is the organization's last owner; make someone else owner before deprovisioning them",
            ));
        }
    }
    sqlx::query("DELETE FROM org_members WHERE org_id = $1 AND user_id = $2")
        .bind(org(p))
        .bind(&user.user_id)
        .execute(&mut *op.tx)
        .await?;
    let revoked = projects::forget_member(&mut op.tx, &p.scope, &user.user_id, op.now).await?;
    // Nothing left to come back through: their pending invitations end, and
    // they are no longer the break-glass owner.
    sqlx::query(
        "UPDATE invitations SET revoked_at = $1 WHERE org_id = $2 AND accepted_at IS NULL AND revoked_at IS NULL \
         AND email = (SELECT email FROM users WHERE id = $3)",
    )
    .bind(op.now)
    .bind(org(p))
    .bind(&user.user_id)
    .execute(&mut *op.tx)
    .await?;
    sqlx::query("UPDATE organizations SET break_glass_user_id = NULL WHERE id = $1 AND break_glass_user_id = $2")
        .bind(org(p))
        .bind(&user.user_id)
        .execute(&mut *op.tx)
        .await?;
    identity::end_sessions(&mut op.tx, &user.user_id).await?;
    Ok((role, revoked))
}

/// Gives a reactivated user their membership back (the role they had, and
/// what their groups grant); their revoked keys stay revoked.
async fn reactivate(
    op: &mut Audited<'_>,
    p: &Provisioner,
    user: &ScimUser,
) -> Result<Synced, AppError> {
    let groups: Vec<String> = scim::groups_of_user(&mut op.tx, &user.id)
        .await?
        .into_iter()
        .map(|g| g.1)
        .collect();
    let mut granted = p.mapping.resolve(&groups);
    let by_group = p
        .mapping
        .rules
        .iter()
        .any(|r| r.role.is_some() && groups.iter().any(|g| g.eq_ignore_ascii_case(&r.group)));
    if !by_group {
        granted.role = user.role;
    }
    identity::sync_member(
        &mut op.tx,
        org(p),
        &user.user_id,
        &p.mapping,
        &granted,
        "scim",
        op.now,
    )
    .await
}

/// Applies the mapping again to the active users among `scim_user_ids`
/// (after their groups changed): role and mapped projects; a user who left
/// a mapped project loses the keys they own there. Each change is audited.
async fn resync(
    op: &mut Audited<'_>,
    p: &Provisioner,
    scim_user_ids: &[String],
) -> Result<bool, AppError> {
    let mut any = false;
    for id in scim_user_ids {
        let Some(mut user) = scim::user(&mut op.tx, org(p), id).await? else {
            continue;
        };
        if !user.active {
            continue;
        }
        let groups: Vec<String> = scim::groups_of_user(&mut op.tx, id)
            .await?
            .into_iter()
            .map(|g| g.1)
            .collect();
        let granted = p.mapping.resolve(&groups);
        let synced = identity::sync_member(
            &mut op.tx,
            org(p),
            &user.user_id,
            &p.mapping,
            &granted,
            "scim",
            op.now,
        )
        .await?;
        if synced.changed() || synced.kept_role.is_some() {
            any = true;
            user.role = synced.role.unwrap_or(user.role);
            scim::update_user(&mut op.tx, &user).await?;
            let change = audited(
                &p.scope,
                "scim.access_synced",
                "user",
                &user.user_id,
                Some(json!({ "role": synced.role_before })),
                Some(json!({
                    "groups": groups, "role": synced.role, "projects_joined": synced.projects_joined,
                    "projects_left": synced.projects_left, "keys_revoked": synced.keys_revoked,
                    "kept_role": synced.kept_role,
                })),
            );
            op.record(&p.actor, change).await?;
        }
    }
    Ok(any)
}

/// Checks that every member is a SCIM user of this organization.
async fn check_members(
    op: &mut Audited<'_>,
    p: &Provisioner,
    members: &[String],
) -> Result<(), AppError> {
    for m in members {
        if scim::user(&mut op.tx, org(p), m).await?.is_none() {
            return Err(AppError::invalid(
                "members",
                format!("'{m}' is not a user of this organization"),
            ));
        }
    }
    Ok(())
}

pub struct GroupInput {
    pub display_name: String,
    pub external_id: Option<String>,
    pub members: Vec<String>,
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

pub async fn create_group(
    state: &AppState,
    p: &Provisioner,
    input: GroupInput,
) -> Result<ScimGroup, AppError> {
    let mut op = Audited::begin(state).await?;
    orgs::lock(&mut op.tx, org(p)).await?;
    let members = dedup(input.members);
    check_members(&mut op, p, &members).await?;
    let group = ScimGroup {
        id: crate::core::new_id(),
        org_id: org(p).to_owned(),
        display_name: input.display_name,
        external_id: input.external_id,
        members,
        version: 1,
        created_at: op.now,
        updated_at: op.now,
    };
    scim::save_group(&mut op.tx, &group, true).await?;
    scim::set_members(&mut op.tx, &group.id, &group.members).await?;
    let changed = resync(&mut op, p, &group.members).await?;
    let change = audited(
        &p.scope,
        "scim.group_created",
        "scim_group",
        &group.id,
        None,
        Some(json!({ "displayName": group.display_name, "members": group.members.len() })),
    );
    let notice = changed.then(|| Notice::OrgAll(org(p).to_owned()));
    op.finish(&p.actor, change, notice).await?;
    Ok(group)
}

/// Replaces a group's name and members (PUT, and PATCH once applied); the
/// members who joined or left, and all of them on a rename, are synced.
pub async fn replace_group(
    state: &AppState,
    p: &Provisioner,
    id: &str,
    input: GroupInput,
    version: Option<i64>,
) -> Result<ScimGroup, AppError> {
    let mut op = Audited::begin(state).await?;
    orgs::lock(&mut op.tx, org(p)).await?;
    let before = scim::group(&mut op.tx, org(p), id)
        .await?
        .ok_or_else(|| AppError::not_found("group"))?;
    if version.is_some_and(|v| v != before.version) {
        return Err(AppError::conflict(STALE));
    }
    let members = dedup(input.members);
    check_members(&mut op, p, &members).await?;
    let mut group = before.clone();
    group.display_name = input.display_name;
    group.external_id = input.external_id;
    group.members = members;
    group.version = group.version.saturating_add(1);
    group.updated_at = op.now;
    scim::save_group(&mut op.tx, &group, false).await?;
    scim::set_members(&mut op.tx, &group.id, &group.members).await?;
    let renamed = !before
        .display_name
        .eq_ignore_ascii_case(&group.display_name);
    let touched: Vec<String> = before
        .members
        .iter()
        .chain(&group.members)
        .filter(|m| renamed || before.members.contains(m) != group.members.contains(m))
        .cloned()
        .collect();
    let changed = resync(&mut op, p, &dedup(touched)).await?;
    let added: Vec<&String> = group
        .members
        .iter()
        .filter(|m| !before.members.contains(m))
        .collect();
    let removed: Vec<&String> = before
        .members
        .iter()
        .filter(|m| !group.members.contains(m))
        .collect();
    let change = audited(
        &p.scope,
        "scim.group_updated",
        "scim_group",
        &group.id,
        Some(json!({ "displayName": before.display_name })),
        Some(
            json!({ "displayName": group.display_name, "members_added": added, "members_removed": removed }),
        ),
    );
    let notice = changed.then(|| Notice::OrgAll(org(p).to_owned()));
    op.finish(&p.actor, change, notice).await?;
    Ok(group)
}

pub async fn delete_group(state: &AppState, p: &Provisioner, id: &str) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    orgs::lock(&mut op.tx, org(p)).await?;
    let before = scim::group(&mut op.tx, org(p), id)
        .await?
        .ok_or_else(|| AppError::not_found("group"))?;
    scim::delete_group(&mut op.tx, org(p), id).await?;
    let changed = resync(&mut op, p, &before.members).await?;
    let change = audited(
        &p.scope,
        "scim.group_deleted",
        "scim_group",
        &before.id,
        Some(json!({ "displayName": before.display_name, "members": before.members.len() })),
        None,
    );
    let notice = changed.then(|| Notice::OrgAll(org(p).to_owned()));
    op.finish(&p.actor, change, notice).await
}

/// Creates a SCIM token for the organization (optionally tied to a
/// connection, whose mapping its groups then follow); shown once.
pub async fn create_scim_token(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    connection_id: Option<&str>,
    name: &str,
) -> Result<(scim::ScimToken, crate::core::keys::token::Token), AppError> {
    let mut op = Audited::begin(state).await?;
    if let Some(c) = connection_id {
        if identity::get(&mut op.tx, scope.org_id(), c)
            .await?
            .is_none()
        {
            return Err(AppError::invalid(
                "connection_id",
                "no such connection in this organization",
            ));
        }
    }
    let (t, token) = scim::create_token(&mut op.tx, scope, connection_id, name, op.now).await?;
    let change = audited(
        scope,
        "scim_token.created",
        "scim_token",
        &t.id,
        None,
        Some(json!({ "name": t.name, "hint": t.hint, "connection_id": t.connection_id })),
    );
    op.finish(actor, change, None).await?;
    Ok((t, token))
}

pub async fn revoke_scim_token(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    id: &str,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    let before = scim::revoke_token(&mut op.tx, scope, id, op.now).await?;
    let change = audited(
        scope,
        "scim_token.revoked",
        "scim_token",
        &before.id,
        Some(json!({ "name": before.name, "hint": before.hint })),
        None,
    );
    op.finish(actor, change, None).await
}
