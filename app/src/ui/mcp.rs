//! The MCP servers page (owners): the organization's registered MCP
//! servers, the tools each exposes, and the form that registers or changes
//! one. A server's credential is written once and never shown again.

use leptos::prelude::*;

use super::{error_of, loaded, org_param, RowAction, Shell, Table};
use crate::api::mcp::{list_mcp_servers, DeleteMcpServer, SaveMcpServer};

#[component]
pub fn McpServersPage() -> impl IntoView {
    let org_id = org_param();
    let save = ServerAction::<SaveMcpServer>::new();
    let delete = ServerAction::<DeleteMcpServer>::new();
    let servers = Resource::new(
        move || (org_id.get(), save.version().get(), delete.version().get()),
        |(o, _, _)| list_mcp_servers(o),
    );
    view! {
        <Shell org_id=org_id>
            <h1>"MCP servers"</h1>
            <p class="muted">
                "Tool servers your applications and agents reach through Tollgate at "<code>"/mcp/{name}"</code>
                " (Streamable HTTP) with a Tollgate key. A project's settings choose which servers and tools its keys may use; "
                <code>"tools/list"</code>" shows a key only those, and every tool call counts against its rate limit and is in the usage log."
            </p>
            {move || error_of(save.value().get()).or_else(|| error_of(delete.value().get())).map(|e| view! { <p class="error" role="alert">{e}</p> })}
            {loaded(servers, move |list| view! {
                <section class="card">
                    {if list.is_empty() {
                        view! { <p class="muted">"No MCP server yet."</p> }.into_any()
                    } else {
                        view! {
                            <Table testid="mcp-servers" head=vec!["Name", "URL", "Tools exposed", "Credential", "Timeout", "Projects", ""]>
                                {list.into_iter().map(|s| view! {
                                    <tr>
                                        <td><code>{format!("/mcp/{}", s.name)}</code></td>
                                        <td>{s.url.clone()}</td>
                                        <td>{s.tools.as_ref().map_or_else(|| "all".to_owned(), |t| t.join(", "))}</td>
                                        <td>{s.credential_hint.as_ref().map_or_else(|| "none".to_owned(), |h| format!("{} {h}", s.credential_header))}</td>
                                        <td>{format!("{} ms", s.timeout_ms)}</td>
                                        <td>{if s.projects.is_empty() { "none".to_owned() } else { s.projects.join(", ") }}</td>
                                        <td>
                                            <RowAction action=delete org_id=org_id.get_untracked() field="name" value=s.name.clone() label="Remove"/>
                                        </td>
                                    </tr>
                                }).collect_view()}
                            </Table>
                        }.into_any()
                    }}
                </section>
            })}
            <section class="card" data-testid="mcp-form">
                <h2>"Register or change a server"</h2>
                <ActionForm action=save>
                    <input type="hidden" name="org_id" value=move || org_id.get()/>
                    <input type="hidden" name="transport" value="http"/>
                    <div class="row">
                        <label>"Name"<input name="name" required placeholder="github"/></label>
                        <label>"URL (Streamable HTTP)"<input name="url" required placeholder="https://mcp.example.com/mcp"/></label>
                    </div>
                    <div class="row">
                        <label>"Credential header"<input name="credential_header" placeholder="Authorization"/></label>
                        <label>"Credential (empty: keep the stored one; - removes it)"<input name="credential" type="password" autocomplete="off" placeholder="Bearer …"/></label>
                    </div>
                    <div class="row">
                        <label>"Tools exposed (empty: all the server offers)"<input name="tools" placeholder="search_issues, get_file"/></label>
                        <label>"Timeout (ms)"<input name="timeout_ms" inputmode="numeric" placeholder="30000"/></label>
                    </div>
                    <button type="submit">"Save server"</button>
                </ActionForm>
                {move || matches!(save.value().get(), Some(Ok(_))).then(|| view! { <p class="ok" role="status">"Saved."</p> })}
            </section>
        </Shell>
    }
}
