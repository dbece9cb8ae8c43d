//! The methods we serve, by request path, read once from the encoded descriptor
//! sets: each per-call layer (spans in `observe.rs`, metrics in `metrics.rs`) keeps
//! what it needs for a method in one of these tables, so a call costs it one map
//! lookup. Any other path maps to `unknown`, so callers cannot grow label sets.

use std::{collections::HashMap, sync::Arc};

use prost::Message;

/// A method as the descriptors name it.
#[derive(Clone, Copy, Debug)]
pub struct MethodInfo<'a> {
    /// `package.Service`.
    pub service: &'a str,
    pub method: &'a str,
    /// `unary`, `client_stream`, `server_stream` or `bidi_stream`.
    pub kind: &'static str,
}

impl MethodInfo<'_> {
    /// What stands for every path that is not one of our methods.
    pub const UNKNOWN: MethodInfo<'static> = MethodInfo {
        service: "unknown",
        method: "unknown",
        kind: "unknown",
    };

    /// `package.Service/Method`, or `unknown`.
    pub fn full_name(&self) -> String {
        if self.service == Self::UNKNOWN.service {
            return Self::UNKNOWN.service.to_owned();
        }
        format!("{}/{}", self.service, self.method)
    }
}

/// Something per method, by request path (`/package.Service/Method`).
#[derive(Debug)]
pub struct MethodTable<T> {
    by_path: HashMap<String, Arc<T>>,
    unknown: Arc<T>,
}

impl<T> MethodTable<T> {
    /// `make` for each method of these sets, and for [`MethodInfo::UNKNOWN`].
    pub fn from_descriptor_sets(sets: &[&[u8]], make: impl Fn(MethodInfo<'_>) -> T) -> Self {
        let mut by_path = HashMap::new();
        for set in sets {
            // Our own compiled-in descriptors: one that does not decode only costs
            // its methods their own entries.
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                continue;
            };
            for file in &set.file {
                for service in &file.service {
                    let service_name = format!("{}.{}", file.package(), service.name());
                    for method in &service.method {
                        let kind = match (method.client_streaming(), method.server_streaming()) {
                            (false, false) => "unary",
                            (true, false) => "client_stream",
                            (false, true) => "server_stream",
                            (true, true) => "bidi_stream",
                        };
                        let info = MethodInfo {
                            service: &service_name,
                            method: method.name(),
                            kind,
                        };
                        by_path.insert(
                            format!("/{service_name}/{}", method.name()),
                            Arc::new(make(info)),
                        );
                    }
                }
            }
        }
        MethodTable {
            by_path,
            unknown: Arc::new(make(MethodInfo::UNKNOWN)),
        }
    }

    pub fn get(&self, path: &str) -> &Arc<T> {
        self.by_path.get(path).unwrap_or(&self.unknown)
    }
}
