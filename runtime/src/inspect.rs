//! What a component imports and exports, for `skillbox inspect`.

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::{ComponentExtern, ComponentItem};

/// One import or export of a component.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Item {
    /// Its name (`wasi:cli/environment@0.2.6`, `run`, ...).
    pub name: String,
    /// What kind of item it is (`instance`, `func`, `type`, ...).
    pub kind: &'static str,
}

/// A component's identity, imports and exports.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentInfo {
    /// Path of the component file.
    pub path: std::path::PathBuf,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// File size in bytes.
    pub size: u64,
    /// Everything the component needs from its host.
    pub imports: Vec<Item>,
    /// Everything the component offers.
    pub exports: Vec<Item>,
}

/// Lists a component's imports and exports.
pub(crate) fn inspect_component(
    engine: &Engine,
    component: &Component,
    path: std::path::PathBuf,
    sha256: String,
    size: u64,
) -> ComponentInfo {
    let ty = component.component_type();
    let items = |list: &mut dyn Iterator<Item = (&str, ComponentExtern<'_>)>| -> Vec<Item> {
        list.map(|(name, item)| Item { name: name.to_owned(), kind: kind(&item.ty) }).collect()
    };
    ComponentInfo {
        path,
        sha256,
        size,
        imports: items(&mut ty.imports(engine)),
        exports: items(&mut ty.exports(engine)),
    }
}

fn kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "func",
        ComponentItem::CoreFunc(_) => "core-func",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    }
}
