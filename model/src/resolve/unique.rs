//! Checks across routes and targets: names and the identifiers names become. (Paths are
//! compared in `matching`: two routes may share one when `match:` tells them apart.)

use std::collections::HashMap;

use super::Checker;
use crate::ident;
use crate::model::{Route, Target};

impl Checker<'_> {
    /// `routes` holds each route that could be read, with its index in the file. Names that are
    /// not valid are reported already; only valid ones are compared as identifiers.
    pub(super) fn check_unique_routes(&mut self, routes: &[(usize, Route)]) {
        let mut names = HashMap::new();
        let mut idents = HashMap::new();
        let mut variants = HashMap::new();
        for (index, route) in routes {
            let base = format!("routes[{index}]");
            let context = format!("route \"{}\"", route.spec.name);
            if let Some(first) = names.insert(&route.spec.name, &route.spec.name) {
                self.report_field(
                    &base,
                    &context,
                    "name",
                    format!("duplicate route name \"{first}\""),
                );
            } else if ident::is_valid_name(route.spec.name) {
                if let Some(first) = idents
                    .insert(&route.ident, &route.spec.name)
                    .or_else(|| variants.insert(&route.variant, &route.spec.name))
                {
                    self.report_field(
                        &base,
                        &context,
                        "name",
                        format!(
                            "\"{}\" and \"{first}\" become the same Rust identifier; rename one",
                            route.spec.name
                        ),
                    );
                }
            }
        }
    }

    /// `targets` holds each target of the route at `base` that could be read, with its index
    /// in the route.
    pub(super) fn check_unique_targets(
        &mut self,
        base: &str,
        context: &str,
        targets: &[(usize, Target)],
    ) {
        let mut names = HashMap::new();
        let mut idents = HashMap::new();
        for (index, target) in targets {
            let target_base = format!("{base}.targets[{index}]");
            let context = format!("{context}, target \"{}\"", target.spec.name);
            if let Some(first) = names.insert(&target.spec.name, &target.spec.name) {
                self.report_field(
                    &target_base,
                    &context,
                    "name",
                    format!("duplicate target name \"{first}\" in this route"),
                );
            } else if ident::is_valid_name(target.spec.name) {
                if let Some(first) = idents.insert(&target.ident, &target.spec.name) {
                    self.report_field(
                        &target_base,
                        &context,
                        "name",
                        format!(
                            "\"{}\" and \"{first}\" become the same Rust identifier; rename one",
                            target.spec.name
                        ),
                    );
                }
            }
        }
    }
}
