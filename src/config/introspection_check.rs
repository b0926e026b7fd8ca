//! Checks of `introspection:` / `introspect:` across resources, once they are validated (kept
//! apart from `introspection.rs`, which the model itself uses).

use std::sync::Arc;

use super::introspection::{IntrospectMode, IntrospectionSettings};
use super::model::{Access, Resource};
use super::{ConfigError, invalid};

/// `introspect: always` needs an endpoint for every issuer whose JWTs it must judge, and an
/// issuer configured in several resources introspects the same way everywhere (one cache,
/// one concurrency bound per issuer).
pub(super) fn check_resources(resources: &[Resource]) -> Result<(), ConfigError> {
    let mut seen: Vec<(&str, &Option<Arc<IntrospectionSettings>>)> = Vec::new();
    for (ri, r) in resources.iter().enumerate() {
        let at = format!("resources[{ri}]");
        for (ii, i) in r.issuers.iter().enumerate() {
            match seen.iter().find(|(name, _)| *name == i.issuer) {
                Some((_, other)) if *other != &i.introspection => {
                    return Err(invalid(
                        format!("{at}.issuers[{ii}].introspection"),
                        format!(
                            "issuer {:?} is configured elsewhere with different introspection settings",
                            i.issuer
                        ),
                    ));
                }
                Some(_) => {}
                None => seen.push((&i.issuer, &i.introspection)),
            }
        }
        let every_issuer = r.issuers.iter().all(|i| i.introspection.is_some());
        let always_routes = r.routes.iter().enumerate().filter(|(_, route)| {
            route.introspect.unwrap_or(r.introspect) == IntrospectMode::Always
                && matches!(route.access, Access::Scopes(_))
        });
        for (i, route) in r.routes.iter().enumerate() {
            if route.introspect.is_some() && matches!(route.access, Access::Public) {
                return Err(invalid(
                    format!("{at}.routes[{i}].introspect"),
                    "a public route takes no token to introspect",
                ));
            }
        }
        let needs = r.introspect == IntrospectMode::Always || always_routes.count() > 0;
        if needs && !every_issuer {
            return Err(invalid(
                format!("{at}.introspect"),
                "`introspect: always` needs `introspection:` on every issuer of the resource",
            ));
        }
    }
    Ok(())
}
