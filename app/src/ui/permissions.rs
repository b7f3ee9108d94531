//! The Permissions page: the policy module's matrix, rendered as it is.

use leptos::prelude::*;

use super::Shell;
use crate::policy::{rows, Grant, Seat};

#[component]
pub fn PermissionsPage() -> impl IntoView {
    view! {
        <Shell>
            <h1>"Permissions"</h1>
            <p class="muted">"Who may do what. This table is the one the server enforces. "
                "“own” means only within the projects the person belongs to (or the keys they own); "
                "“read-only” means they may look but not change."</p>
            <table class="matrix" data-testid="permissions">
                <thead>
                    <tr>
                        <th>"Action"</th>
                        {Seat::ALL.into_iter().map(|s| view! { <th>{s.label()}</th> }).collect_view()}
                    </tr>
                </thead>
                <tbody>
                    {rows().map(|(action, row)| view! {
                        <tr>
                            <th scope="row">{action.label()}</th>
                            {row.iter().map(|g| {
                                let class = match g {
                                    Grant::Yes => "yes",
                                    Grant::Own => "own",
                                    Grant::ReadOnly => "own",
                                    Grant::No => "no",
                                };
                                view! { <td class=class>{g.label()}</td> }
                            }).collect_view()}
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </Shell>
    }
}
