//! The matrix and the scopes, cell by cell.

use super::*;

fn member(role: OrgRole) -> OrgMember {
    OrgMember {
        user_id: "u".into(),
        org_id: "o".into(),
        role,
    }
}

#[test]
fn every_action_is_listed_once() {
    // The `match` in `Action::row` gives each action exactly one row; the
    // list the Permissions page walks must name each action once.
    for a in Action::ALL {
        assert_eq!(Action::ALL.iter().filter(|x| **x == a).count(), 1, "{a:?}");
        assert_eq!(rows().filter(|(x, _)| *x == a).count(), 1, "{a:?}");
    }
}

#[test]
fn owners_may_do_everything_and_the_org_only_roles_stay_out_of_keys() {
    // Everything but provisioning through SCIM, which only a SCIM token does.
    for action in Action::ALL {
        let want = action != Action::ProvisionIdentities;
        assert_eq!(allows(action, Seat::OrgOwner), want, "{action:?}");
    }
    for seat in [Seat::BillingManager, Seat::Viewer, Seat::OrgMemberNoProject] {
        for a in [
            Action::ManageOwnKeys,
            Action::ManageProjectKeys,
            Action::CreateProject,
        ] {
            assert!(!allows(a, seat), "{seat:?} {a:?}");
        }
    }
    assert!(allows(Action::BillingAndCredits, Seat::BillingManager));
    assert!(!allows(Action::BillingAndCredits, Seat::Viewer));
    assert!(allows(Action::ViewUsage, Seat::Viewer));
}

#[test]
fn a_denial_names_the_permission_and_the_role() {
    let err = authorize_org(&member(OrgRole::Viewer), Action::ManageOrgMembers)
        .err()
        .map(|d| d.to_string());
    assert_eq!(
        err.as_deref(),
        Some("your role 'viewer' lacks the permission 'manage organization members'")
    );
    let ok = authorize_org(&member(OrgRole::Owner), Action::ManageOrgMembers);
    assert_eq!(ok.map(|s| s.org_id().to_owned()).ok().as_deref(), Some("o"));
}

fn in_project(org: OrgRole, role: Option<ProjectRole>) -> ProjectMember {
    ProjectMember {
        org: member(org),
        project_id: "p".into(),
        role,
    }
}

#[test]
fn project_seats_follow_the_project_role_and_owners_are_admins_everywhere() {
    assert_eq!(in_project(OrgRole::Owner, None).seat(), Seat::OrgOwner);
    assert_eq!(
        in_project(OrgRole::Member, Some(ProjectRole::Admin)).seat(),
        Seat::ProjectAdmin
    );
    assert_eq!(
        in_project(OrgRole::Member, None).seat(),
        Seat::OrgMemberNoProject
    );
    assert!(!in_project(OrgRole::Member, None).sees_project());
    assert!(!in_project(OrgRole::Billing, None).sees_project());
    assert!(in_project(OrgRole::Owner, None).sees_project());
}

#[test]
fn project_questions_follow_from_the_table() {
    assert!(sees_all_projects(OrgRole::Owner));
    assert!(!sees_all_projects(OrgRole::Member));
    assert!(joins_projects(OrgRole::Member));
    for r in [OrgRole::Owner, OrgRole::Billing, OrgRole::Viewer] {
        assert!(!joins_projects(r), "{r}");
    }
    assert!(may_hold_keys(OrgRole::Owner) && may_hold_keys(OrgRole::Member));
    assert!(!may_hold_keys(OrgRole::Billing) && !may_hold_keys(OrgRole::Viewer));
}

/// The scope an organization member with `role` in the project gets for
/// their own keys.
fn managing_own_keys(role: ProjectRole) -> ProjectScope {
    match authorize_project(
        &in_project(OrgRole::Member, Some(role)),
        Action::ManageOwnKeys,
    ) {
        Ok(scope) => scope,
        Err(denied) => panic!("a project {role:?} manages own keys: {denied}"),
    }
}

#[test]
fn members_manage_only_their_own_keys() {
    let scope = managing_own_keys(ProjectRole::Member);
    assert!(authorize_key(&scope, Some("u")).is_ok());
    let err = authorize_key(&scope, Some("someone-else"))
        .err()
        .map(|d| d.to_string());
    assert_eq!(
        err.as_deref(),
        Some("your role 'project member' lacks the permission 'manage all keys in a project'")
    );
    let admin = managing_own_keys(ProjectRole::Admin);
    assert!(authorize_key(&admin, Some("someone-else")).is_ok());
    assert!(authorize_key(&admin, None).is_ok(), "service keys too");
}

#[test]
fn a_provisioning_key_manages_keys_projects_people_models_and_providers_but_not_money() {
    // LiteLLM's admin API (its master key) manages models and credentials.
    for a in [
        Action::ManageAllKeys,
        Action::CreateProject,
        Action::DeleteProject,
        Action::ManageOrgMembers,
        Action::ExternalKeys,
        Action::ModelCatalogue,
    ] {
        assert!(allows(a, Seat::Provisioning), "{a:?}");
    }
    for a in [
        Action::BillingAndCredits,
        Action::VirtualModels,
        Action::ViewAuditLog,
    ] {
        assert!(!allows(a, Seat::Provisioning), "{a:?}");
    }
    assert_eq!(
        grant(Action::ViewUsage, Seat::Provisioning),
        Grant::ReadOnly
    );
    let m = Machine {
        key_id: "pk".into(),
        org_id: "o".into(),
    };
    let scope = authorize_machine(&m, Action::ManageAllKeys).ok();
    assert_eq!(scope.as_ref().and_then(|s| s.user_id()), None, "not a user");
    assert_eq!(scope.map(|s| s.org_id().to_owned()).as_deref(), Some("o"));
    let denied = authorize_machine(&m, Action::BillingAndCredits)
        .err()
        .map(|d| d.to_string());
    assert!(
        denied
            .as_deref()
            .is_some_and(|d| d.starts_with("your role 'provisioning key' lacks the permission")),
        "{denied:?}"
    );
}

#[test]
fn a_provisioning_key_never_changes_or_removes_an_owner() {
    let m = Machine {
        key_id: "pk".into(),
        org_id: "o".into(),
    };
    for role in [OrgRole::Member, OrgRole::Viewer, OrgRole::Billing] {
        assert!(
            crate::policy::authorize_machine_member(&m, role).is_ok(),
            "{role:?}"
        );
    }
    assert!(crate::policy::authorize_machine_member(&m, OrgRole::Owner).is_err());
}

#[test]
fn roles_parse_from_their_names_only() {
    assert_eq!("billing".parse::<OrgRole>(), Ok(OrgRole::Billing));
    assert!("admin".parse::<OrgRole>().is_err());
}

#[test]
fn only_owners_configure_single_sign_on_and_only_scim_tokens_provision() {
    for seat in Seat::ALL {
        assert_eq!(
            allows(Action::SingleSignOn, seat),
            seat == Seat::OrgOwner,
            "{seat:?}"
        );
        assert_eq!(
            allows(Action::ProvisionIdentities, seat),
            seat == Seat::Scim,
            "{seat:?}"
        );
    }
    let client = ScimClient {
        token_id: "st".into(),
        org_id: "o".into(),
    };
    let scope = authorize_scim(&client, Action::ProvisionIdentities).ok();
    assert_eq!(scope.as_ref().and_then(|s| s.user_id()), None, "not a user");
    assert_eq!(scope.map(|s| s.org_id().to_owned()).as_deref(), Some("o"));
    for a in Action::ALL {
        if a != Action::ProvisionIdentities {
            assert!(authorize_scim(&client, a).is_err(), "{a:?}");
        }
    }
}
