//! Node and request commands: `list`, `delete`, `hold`, `request-list`,
//! `label-list`, `info`, `erase`.
//!
//! Exit codes: 0 on success, 1 when the command could not do what was asked
//! (no such node, store unreachable, invalid config), 2 for usage errors.

use std::io::BufRead;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use nodepool_core::model::{now, Node, NodeState};
use nodepool_core::status;
use nodepool_core::store::{locked_nodes, LockOptions, LockTarget, NodeStore};

use super::session::{with_store, CmdError, Session};

/// How a listing is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Upstream's text table.
    Table,
    /// Upstream's JSON (a list of objects).
    Json,
}

impl Format {
    pub(crate) fn from_flag(json: bool) -> Self {
        if json {
            Format::Json
        } else {
            Format::Table
        }
    }
}

fn print_listing(listing: &status::Listing, format: Format, fields: Option<&[&str]>) {
    match format {
        Format::Json => super::out::print_result(listing.to_json()),
        Format::Table => super::out::print_result(listing.to_text(fields, now())),
    }
}

async fn print_nodes(
    store: &dyn NodeStore,
    nodes: &[Node],
    detail: bool,
    format: Format,
) -> Result<(), CmdError> {
    let locked = locked_nodes(store, nodes.iter().map(|n| n.id.clone()).collect()).await;
    let listing = status::node_list(nodes, &locked, now());
    let fields = status::node_list_cli_fields(detail);
    print_listing(&listing, format, Some(&fields));
    Ok(())
}

/// `nodepool list [--detail] [--json]`.
pub(crate) fn list(session: &Session, detail: bool, format: Format) -> ExitCode {
    with_store(session, |store, _| async move {
        let nodes = store.list_nodes().await?;
        print_nodes(store.as_ref(), &nodes, detail, format).await
    })
}

/// `nodepool request-list [--json]`.
pub(crate) fn request_list(session: &Session, format: Format) -> ExitCode {
    with_store(session, |store, _| async move {
        let requests = store.list_requests().await?;
        print_listing(&status::request_list(&requests), format, None);
        Ok(())
    })
}

/// `nodepool label-list [--json]`: labels some running launcher serves.
pub(crate) fn label_list(session: &Session, format: Format) -> ExitCode {
    with_store(session, |store, _| async move {
        let pools = store.list_components("pool").await?;
        print_listing(&status::label_list(&pools), format, None);
        Ok(())
    })
}

async fn get_node(store: &dyn NodeStore, id: &str) -> Result<Node, CmdError> {
    store
        .get_node(id)
        .await?
        .ok_or_else(|| CmdError::NotFound(format!("Node id {id} not found")))
}

/// Lock a node that exists, waiting up to 5 s as upstream does.
async fn lock_node(
    store: &dyn NodeStore,
    id: &str,
) -> Result<nodepool_core::store::LockHandle, CmdError> {
    get_node(store, id).await?;
    store
        .lock(
            &LockTarget::Node(id.to_string()),
            &LockOptions {
                identifier: Some("nodepool-cli".to_string()),
                ..LockOptions::wait(Duration::from_secs(5))
            },
        )
        .await
        .map_err(|e| CmdError::Failed(format!("cannot lock node {id}: {e}")))
}

/// Lock a node, change it, unlock it.
async fn change_node(
    store: &Arc<dyn NodeStore>,
    id: &str,
    change: impl FnOnce(&mut Node),
) -> Result<Node, CmdError> {
    let lock = lock_node(store.as_ref(), id).await?;
    let result = async {
        let mut node = get_node(store.as_ref(), id).await?;
        change(&mut node);
        store.update_node(&node).await?;
        Ok::<Node, CmdError>(node)
    }
    .await;
    let unlocked = store.unlock(&lock).await;
    let node = result?;
    unlocked?;
    Ok(node)
}

/// `nodepool delete ID [--now]`: mark the node `deleting` for the launcher
/// to delete, or with `--now` delete its instance and record here.
pub(crate) fn delete(session: &Session, id: String, now_: bool, format: Format) -> ExitCode {
    with_store(session, |store, session| async move {
        if !now_ {
            let node = change_node(&store, &id, |n| n.set_state(NodeState::Deleting)).await?;
            return print_nodes(store.as_ref(), &[node], false, format).await;
        }
        let node = get_node(store.as_ref(), &id).await?;
        let provider_name = node.provider.clone().unwrap_or_default();
        let config = session.config()?;
        let reg = crate::daemon::registry();
        let provider = config
            .provider(&provider_name)
            .ok_or_else(|| {
                CmdError::Failed(format!(
                    "Provider {provider_name} for node {id} not defined in the configuration"
                ))
            })
            .and_then(|p| {
                let driver = reg.get(&p.driver).ok_or_else(|| {
                    CmdError::Failed(format!("no driver {} for {provider_name}", p.driver))
                })?;
                driver.create_provider(p).map_err(CmdError::from)
            })?;
        let lock = lock_node(store.as_ref(), &id).await?;
        let deleted = async {
            let mut node = get_node(store.as_ref(), &id).await?;
            node.set_state(NodeState::Deleting);
            store.update_node(&node).await?;
            if let Some(external) = &node.external_id {
                provider.delete_instance(external).await?;
            }
            store.delete_node(&id).await?;
            Ok::<(), CmdError>(())
        }
        .await;
        // Deleting the record removed its lock; an error here is expected.
        let _ = store.unlock(&lock).await;
        deleted?;
        super::out::print_result(format_args!("Node {id} deleted"));
        Ok(())
    })
}

/// `nodepool hold ID [--reason TEXT]`.
pub(crate) fn hold(
    session: &Session,
    id: String,
    reason: Option<String>,
    format: Format,
) -> ExitCode {
    with_store(session, |store, _| async move {
        let node = change_node(&store, &id, |n| {
            n.set_state(NodeState::Hold);
            if let Some(reason) = reason {
                n.comment = Some(reason);
            }
        })
        .await?;
        print_nodes(store.as_ref(), &[node], false, format).await
    })
}

/// `nodepool info PROVIDER [--json]`: the provider's uploads and nodes.
pub(crate) fn info(session: &Session, provider: String, format: Format) -> ExitCode {
    with_store(session, |store, _| async move {
        let nodes: Vec<Node> = store
            .list_nodes()
            .await?
            .into_iter()
            .filter(|n| n.provider.as_deref() == Some(provider.as_str()))
            .collect();
        let mut uploads = Vec::new();
        for image in store.list_images().await? {
            for build in store.list_builds(&image).await? {
                uploads.extend(
                    store
                        .list_uploads(&image, &build.id)
                        .await?
                        .into_iter()
                        .filter(|u| u.provider_name == provider),
                );
            }
        }
        match format {
            Format::Table => {
                super::out::print_result(status::info_text(&provider, &uploads, &nodes))
            }
            Format::Json => super::out::print_result(format_args!(
                "{{\"images\": {}, \"nodes\": {}}}",
                status::info_images(&provider, &uploads).to_json(),
                status::info_nodes(&provider, &nodes).to_json()
            )),
        }
        Ok(())
    })
}

/// `nodepool erase PROVIDER [--force]`: remove the provider's nodes and
/// uploads from the store (not from the cloud).
pub(crate) fn erase(session: &Session, provider: String, force: bool) -> ExitCode {
    if !force {
        super::out::progress("\nWARNING! This action is not reversible!");
        super::out::prompt(format_args!(
            "Erase ZooKeeper data for provider {provider}? [N/y] "
        ));
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !answer.trim().eq_ignore_ascii_case("y") {
            super::out::progress("Aborting. No data erased.");
            return ExitCode::from(1);
        }
    }
    with_store(session, |store, _| async move {
        super::out::progress(format_args!("Erasing build data for {provider}..."));
        for image in store.list_images().await? {
            for build in store.list_builds(&image).await? {
                for upload in store.list_uploads(&image, &build.id).await? {
                    if upload.provider_name == provider {
                        store
                            .delete_upload(&image, &build.id, &provider, &upload.id)
                            .await?;
                    }
                }
            }
        }
        super::out::progress(format_args!("Erasing node data for {provider}..."));
        for node in store.list_nodes().await? {
            if node.provider.as_deref() == Some(provider.as_str()) {
                store.delete_node(&node.id).await?;
            }
        }
        Ok(())
    })
}
