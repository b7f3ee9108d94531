//! Billing: credit entries, the prepaid switch and alert settings.

use serde_json::json;

use super::{audited, org_notice, Audited};
use crate::core::audit::Actor;
use crate::core::billing::{self, CreditEntry, CreditKind};
use crate::core::state::AppState;
use crate::core::{new_id, orgs};
use crate::error::AppError;
use crate::format::Usd;
use crate::policy::OrgScope;

/// A credit entry as typed: a grant or purchase (positive) or an adjustment
/// (either sign), with a note and a reference.
pub struct NewCredit {
    pub kind: CreditKind,
    pub amount_micros: i64,
    pub note: String,
    pub reference: String,
}

impl NewCredit {
    pub fn parse(
        kind: &str,
        amount: &str,
        note: &str,
        reference: &str,
    ) -> Result<NewCredit, AppError> {
        let kind = CreditKind::parse("kind", kind)?;
        let raw = amount.trim();
        let (negative, digits) = match raw.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let micros = Usd::parse("amount", digits)?.micros();
        let micros = if negative { -micros } else { micros };
        if micros == 0 {
            return Err(AppError::invalid("amount", "must not be zero"));
        }
        if micros < 0 && kind != CreditKind::Adjustment {
            return Err(AppError::invalid(
                "amount",
                "only an adjustment may be negative",
            ));
        }
        let note = note.trim();
        if note.chars().count() > 500 {
            return Err(AppError::invalid("note", "at most 500 characters"));
        }
        let reference = reference.trim();
        if reference.chars().count() > 200 {
            return Err(AppError::invalid("reference", "at most 200 characters"));
        }
        Ok(NewCredit {
            kind,
            amount_micros: micros,
            note: note.to_owned(),
            reference: reference.to_owned(),
        })
    }
}

/// Enters a credit; `entered_by` is what the ledger shows (the actor's email).
pub async fn add_credit(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    credit: NewCredit,
    entered_by: &str,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    let entry = CreditEntry {
        id: new_id(),
        at: op.now,
        kind: credit.kind.as_str().to_owned(),
        amount_micros: credit.amount_micros,
        note: credit.note,
        reference: credit.reference,
        entered_by: entered_by.to_owned(),
    };
    billing::add_credit(&mut op.tx, scope, &entry).await?;
    let after = json!({
        "kind": entry.kind, "amount_micros": entry.amount_micros, "note": entry.note,
        "reference": entry.reference,
    });
    let change = audited(
        scope,
        "billing.credit_added",
        "credit",
        &entry.id,
        None,
        Some(after),
    );
    op.finish(actor, change, Some(org_notice(scope))).await
}

/// Turns enforcement of the credit balance on or off; no event when unchanged.
pub async fn set_prepaid(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    on: bool,
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    let before = billing::standing(&mut op.tx, scope, op.now).await?.prepaid;
    if before == on {
        return Ok(());
    }
    billing::set_prepaid(&mut op.tx, scope, on, op.now).await?;
    let change = audited(
        scope,
        "billing.prepaid_changed",
        "organization",
        scope.org_id(),
        Some(json!({ "prepaid": before })),
        Some(json!({ "prepaid": on })),
    );
    op.finish(actor, change, Some(org_notice(scope))).await
}

/// New alerting settings for the organization. Webhooks on private
/// addresses are refused here, for every caller (console and LiteLLM's
/// `/config/update`), unless the operator allows private networks.
pub async fn set_alerting(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    alerting: &orgs::Alerting,
) -> Result<(), AppError> {
    check_urls(state, [&alerting.webhook_url, &alerting.slack_url]).await?;
    change_alerting(state, actor, scope, |a| *a = alerting.clone()).await
}

/// The console's edit of the alert settings: a URL to set (`Some(Some)`),
/// to remove (`Some(None)`) or to keep (`None`), and the thresholds.
pub struct AlertingEdit {
    pub webhook_url: Option<Option<String>>,
    pub slack_url: Option<Option<String>>,
    pub thresholds: Vec<i64>,
}

impl AlertingEdit {
    /// The form's fields: an empty URL keeps the one set before, a clear
    /// box removes it; thresholds are percentages from 1 to 1000 (none: the
    /// defaults).
    pub fn parse(
        (webhook_url, clear_webhook): (&str, bool),
        (slack_url, clear_slack): (&str, bool),
        thresholds: &str,
    ) -> Result<AlertingEdit, AppError> {
        let url = |field: &str, raw: &str, clear: bool| -> Result<_, AppError> {
            let raw = raw.trim();
            if raw.is_empty() {
                return Ok(clear.then_some(None));
            }
            let url = url::Url::parse(raw)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| AppError::invalid(field, "not an http(s) URL"))?;
            Ok(Some((!clear).then(|| url.to_string())))
        };
        let mut levels = Vec::new();
        for part in thresholds
            .split([',', ' '])
            .filter(|s| !s.trim().is_empty())
        {
            match part.trim().trim_end_matches('%').parse::<i64>() {
                Ok(n) if (1..=1000).contains(&n) => levels.push(n),
                _ => {
                    return Err(AppError::invalid(
                        "thresholds",
                        format!("'{part}' is not a percentage from 1 to 1000"),
                    ))
                }
            }
        }
        levels.sort_unstable();
        levels.dedup();
        if levels.is_empty() {
            levels = orgs::DEFAULT_THRESHOLDS.to_vec();
        }
        Ok(AlertingEdit {
            webhook_url: url("webhook_url", webhook_url, clear_webhook)?,
            slack_url: url("slack_url", slack_url, clear_slack)?,
            thresholds: levels,
        })
    }
}

/// Applies the console's edit to the settings as they are inside the
/// transaction; a newly set webhook is checked like `set_alerting`'s.
pub async fn update_alerting(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    edit: AlertingEdit,
) -> Result<(), AppError> {
    let webhook = edit.webhook_url.clone().flatten();
    let slack = edit.slack_url.clone().flatten();
    check_urls(state, [&webhook, &slack]).await?;
    change_alerting(state, actor, scope, |a| {
        if let Some(url) = edit.webhook_url {
            a.webhook_url = url;
        }
        if let Some(url) = edit.slack_url {
            a.slack_url = url;
        }
        a.thresholds = edit.thresholds;
    })
    .await
}

async fn check_urls(state: &AppState, urls: [&Option<String>; 2]) -> Result<(), AppError> {
    for (field, url) in ["webhook_url", "slack_url"].into_iter().zip(urls) {
        if let Some(url) = url {
            super::super::net::check_url(field, url, state.allow_private_networks).await?;
        }
    }
    Ok(())
}

/// The settings as `edit` leaves them, with the "before" read in the same
/// transaction.
async fn change_alerting(
    state: &AppState,
    actor: &Actor,
    scope: &OrgScope,
    edit: impl FnOnce(&mut orgs::Alerting),
) -> Result<(), AppError> {
    let mut op = Audited::begin(state).await?;
    let before = orgs::alerting(&mut op.tx, scope).await?;
    let mut alerting = before.clone();
    edit(&mut alerting);
    orgs::set_alerting(&mut op.tx, scope, &alerting, op.now).await?;
    // Webhook URLs carry their token: the audit log keeps where, not the URL.
    let as_json = |a: &orgs::Alerting| {
        json!({
            "webhook": a.webhook_url.as_deref().map(orgs::url_hint),
            "slack": a.slack_url.as_deref().map(orgs::url_hint),
            "alert_types": a.alert_types, "thresholds": a.thresholds,
        })
    };
    let change = audited(
        scope,
        "org.alerting_updated",
        "organization",
        scope.org_id(),
        Some(as_json(&before)),
        Some(as_json(&alerting)),
    );
    op.finish(actor, change, None).await
}
