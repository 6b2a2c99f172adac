//! Roles and their rules: which rights a role has, how far its clearance goes, and per-layer
//! rules (allow or deny a layer whatever its classification, and an attribute allow-list).
//!
//! A built-in policy holds the roles `anonymous`, `viewer`, `operator`, `analyst`, `admin` and
//! `auditor`; a policy file (`--policy FILE`, TOML) replaces roles of the same name and adds
//! others:
//!
//! ```toml
//! [roles.analyst]
//! clearance = "restricted"            # public < internal < restricted < confidential
//! rights = ["tiles", "devices", "tracks", "stream"]
//!
//! [[roles.analyst.layers]]
//! layer = "parcels"
//! access = "allow"                    # or "deny"; allow opens a layer above the clearance;
//!                                     # without it the clearance decides
//! attributes = ["id", "landuse"]      # the only properties served (tiles, TileJSON, catalog)
//!
//! [[roles.analyst.layers]]
//! layer = "buses"
//! precision_m = 250                   # live positions snapped to a 250 m grid for this role
//! area = { type = "Polygon", coordinates = [[[24.90, 60.15], [24.98, 60.15],
//!          [24.98, 60.20], [24.90, 60.20], [24.90, 60.15]]] }
//!                                     # only features and devices in it; tiles outside: 404
//! ```
//! A live layer flagged personal (positions of people or personal vehicles) is served to roles
//! without `exact_positions` snapped to `personal_precision_m` (a top-level key, default 100)
//! unless a rule sets another precision.
//! Unknown keys, unknown rights, bad layer names and two rules for one layer in one role are
//! refused with the key's place; the file is read at start and again when it changes (a bad
//! edit keeps the last good policy and says why).

use crate::store::db::Classification;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What a principal may do. Layers are further checked one by one (classification, rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Right {
    /// Read tiles, TileJSON and the catalog of the layers it may see.
    Tiles,
    /// Read devices (`/devices`) and geofences.
    Devices,
    /// Read position history (`/devices/{id}/track`).
    Tracks,
    /// Watch `/stream`.
    Stream,
    /// Create and delete geofences.
    GeofencesWrite,
    /// Change the device registry.
    DevicesWrite,
    /// Post device reports for any device (as an ingest key does).
    Ingest,
    /// Administer the server.
    Admin,
    /// Read the audit log.
    Audit,
    /// See personal positions without the precision limit.
    ExactPositions,
    /// Read layers at full resolution as features: OGC API Features items and whole-layer
    /// downloads (FlatGeobuf, GeoPackage, GeoJSON).
    Features,
}

impl Right {
    /// All rights.
    pub const ALL: [Right; 11] = [
        Right::Tiles,
        Right::Devices,
        Right::Tracks,
        Right::Stream,
        Right::GeofencesWrite,
        Right::DevicesWrite,
        Right::Ingest,
        Right::Admin,
        Right::Audit,
        Right::ExactPositions,
        Right::Features,
    ];

    /// Its name in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Tiles => "tiles",
            Right::Devices => "devices",
            Right::Tracks => "tracks",
            Right::Stream => "stream",
            Right::GeofencesWrite => "geofences:write",
            Right::DevicesWrite => "devices:write",
            Right::Ingest => "ingest",
            Right::Admin => "admin",
            Right::Audit => "audit",
            Right::ExactPositions => "exact_positions",
            Right::Features => "features",
        }
    }

    /// From its name.
    pub fn parse(s: &str) -> Option<Right> {
        Right::ALL.into_iter().find(|r| r.as_str() == s)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of rights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Rights(u16);

impl Rights {
    /// The set of `rights`.
    pub fn of(rights: &[Right]) -> Rights {
        Rights(rights.iter().fold(0, |a, r| a | r.bit()))
    }

    /// True if `r` is in the set.
    pub fn has(self, r: Right) -> bool {
        self.0 & r.bit() != 0
    }

    /// The names, for display.
    pub fn names(self) -> Vec<&'static str> {
        Right::ALL
            .into_iter()
            .filter(|r| self.has(*r))
            .map(Right::as_str)
            .collect()
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Show the layer (also above the role's clearance).
    Allow,
    /// Never show it.
    Deny,
}

/// A rule of a role for one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRule {
    /// Allow or deny; `None` when the rule only limits what is shown (attributes, precision,
    /// area): visibility is then the clearance's, so such a rule never opens a layer.
    pub access: Option<Access>,
    /// The only attributes served, when set.
    pub attributes: Option<Arc<BTreeSet<String>>>,
    /// Live positions snapped to a grid of this many metres, when set.
    pub precision_m: Option<u32>,
    /// Only features and devices in this area are served, when set.
    pub area: Option<Arc<crate::tile::area::Area>>,
}

/// The precision of personal positions for roles without `exact_positions`, by default.
pub const PERSONAL_PRECISION_M: u32 = 100;

/// A role.
#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    /// Name.
    pub name: String,
    /// The highest classification it sees without a rule.
    pub clearance: Classification,
    /// What it may do.
    pub rights: Rights,
    /// Rules by layer name.
    pub layers: BTreeMap<String, LayerRule>,
    /// Precision of personal positions without `exact_positions`, metres.
    pub personal_precision_m: u32,
}

/// All roles.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Roles by name.
    pub roles: BTreeMap<String, Arc<Role>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    personal_precision_m: Option<u32>,
    #[serde(default)]
    roles: BTreeMap<String, RoleFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleFile {
    clearance: Classification,
    #[serde(default)]
    rights: Vec<String>,
    #[serde(default)]
    layers: Vec<LayerRuleFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LayerRuleFile {
    layer: String,
    access: Option<Access>,
    attributes: Option<Vec<String>>,
    precision_m: Option<u32>,
    area: Option<serde_json::Value>,
}

fn role(name: &str, clearance: Classification, rights: &[Right]) -> (String, Arc<Role>) {
    (
        name.to_string(),
        Arc::new(Role {
            name: name.to_string(),
            clearance,
            rights: Rights::of(rights),
            layers: BTreeMap::new(),
            personal_precision_m: PERSONAL_PRECISION_M,
        }),
    )
}

impl Policy {
    /// The built-in roles: `anonymous` (public layers only, no device data), `viewer`
    /// (internal layers, devices, stream), `operator` (also history, geofence and registry
    /// changes, exact positions), `analyst` (restricted layers, devices, history), `admin`
    /// (everything) and `auditor` (the audit log, internal layers).
    pub fn builtin() -> Policy {
        use Classification::*;
        use Right::*;
        Policy {
            roles: [
                role("anonymous", Public, &[Tiles]),
                role("viewer", Internal, &[Tiles, Features, Devices, Stream]),
                role(
                    "operator",
                    Internal,
                    &[
                        Tiles,
                        Features,
                        Devices,
                        Tracks,
                        Stream,
                        GeofencesWrite,
                        DevicesWrite,
                        ExactPositions,
                    ],
                ),
                role(
                    "analyst",
                    Restricted,
                    &[Tiles, Features, Devices, Tracks, Stream],
                ),
                role("admin", Confidential, &Right::ALL),
                role("auditor", Internal, &[Tiles, Audit]),
            ]
            .into_iter()
            .collect(),
        }
    }

    /// The built-in policy with the roles of a policy file (TOML) over it; `source` names
    /// the file in errors.
    pub fn parse(text: &str, source: &str) -> Result<Policy, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| format!("{source}: {e}"))?;
        let personal = file.personal_precision_m.unwrap_or(PERSONAL_PRECISION_M);
        if !(1..=100_000).contains(&personal) {
            return Err(format!(
                "{source}: personal_precision_m = {personal}: give 1 to 100000 metres"
            ));
        }
        let mut policy = Policy::builtin();
        for r in policy.roles.values_mut() {
            Arc::make_mut(r).personal_precision_m = personal;
        }
        for (name, r) in file.roles {
            let at = format!("{source}: roles.{name}");
            if !valid_name(&name) {
                return Err(format!("{at}: a role name is 1-64 of a-z 0-9 _ -"));
            }
            let mut rights = Vec::new();
            for right in &r.rights {
                rights.push(Right::parse(right).ok_or_else(|| {
                    format!(
                        "{at}.rights: unknown right {right:?}; rights are {}",
                        Right::ALL.map(Right::as_str).join(", ")
                    )
                })?);
            }
            let mut layers = BTreeMap::new();
            for (i, l) in r.layers.into_iter().enumerate() {
                let at = format!("{at}.layers[{i}]");
                if !crate::store::catalog::valid_layer_name(&l.layer) {
                    return Err(format!("{at}.layer: {:?} is not a layer name", l.layer));
                }
                if let Some(a) = &l.attributes
                    && let Some(bad) = a.iter().find(|k| k.is_empty() || k.len() > 256)
                {
                    return Err(format!("{at}.attributes: {bad:?} is not an attribute name"));
                }
                if let Some(m) = l.precision_m
                    && !(1..=100_000).contains(&m)
                {
                    return Err(format!("{at}.precision_m: {m}: give 1 to 100000 metres"));
                }
                let area = match &l.area {
                    None => None,
                    Some(v) => {
                        let (_, shape) = crate::live::fence::Fence::parse_geometry(v)
                            .map_err(|e| format!("{at}.area: {e}"))?;
                        Some(Arc::new(crate::tile::area::Area::new(shape)))
                    }
                };
                let rule = LayerRule {
                    access: l.access,
                    attributes: l.attributes.map(|a| Arc::new(a.into_iter().collect())),
                    precision_m: l.precision_m,
                    area,
                };
                if layers.insert(l.layer.clone(), rule).is_some() {
                    return Err(format!(
                        "{at}: a second rule for layer {:?} in this role; keep one",
                        l.layer
                    ));
                }
            }
            policy.roles.insert(
                name.clone(),
                Arc::new(Role {
                    name,
                    clearance: r.clearance,
                    rights: Rights::of(&rights),
                    layers,
                    personal_precision_m: personal,
                }),
            );
        }
        Ok(policy)
    }

    /// A role; `None` for a name the policy does not define.
    pub fn role(&self, name: &str) -> Option<&Arc<Role>> {
        self.roles.get(name)
    }
}

/// True for role names: 1-64 of `a-z 0-9 _ -`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_file_adds_and_replaces_roles() {
        let p = Policy::parse(
            r#"
            [roles.analyst]
            clearance = "restricted"
            rights = ["tiles", "devices"]
            [[roles.analyst.layers]]
            layer = "parcels"
            attributes = ["id"]
            [[roles.analyst.layers]]
            layer = "secret"
            access = "deny"
            [roles.guest]
            clearance = "public"
            rights = ["tiles"]
            "#,
            "p.toml",
        )
        .unwrap();
        let a = p.role("analyst").unwrap();
        assert!(a.rights.has(Right::Devices) && !a.rights.has(Right::Tracks));
        assert_eq!(a.layers["secret"].access, Some(Access::Deny));
        assert!(
            a.layers["parcels"]
                .attributes
                .as_ref()
                .unwrap()
                .contains("id")
        );
        assert!(p.role("guest").is_some() && p.role("admin").is_some());
    }

    #[test]
    fn bad_policies_are_refused_with_the_place() {
        let cases = [
            (
                "[roles.x]\nclearance = \"internal\"\ncolour = 1\n",
                "unknown field `colour`",
            ),
            (
                "[roles.x]\nclearance = \"secret\"\n",
                "unknown variant `secret`",
            ),
            (
                "[roles.x]\nclearance = \"public\"\nrights = [\"fly\"]\n",
                "roles.x.rights: unknown right \"fly\"",
            ),
            ("[roles.x]\nclearance = 3\n", "wanted string"),
            (
                "[roles.X]\nclearance = \"public\"\n",
                "roles.X: a role name",
            ),
            (
                "[roles.x]\nclearance = \"public\"\n[[roles.x.layers]]\nlayer = \"a\"\n[[roles.x.layers]]\nlayer = \"a\"\naccess = \"deny\"\n",
                "roles.x.layers[1]: a second rule",
            ),
            (
                "[roles.x]\nclearance = \"public\"\n[[roles.x.layers]]\nlayer = \"../etc\"\n",
                "roles.x.layers[0].layer",
            ),
        ];
        for (text, want) in cases {
            let e = Policy::parse(text, "p.toml").unwrap_err();
            assert!(e.starts_with("p.toml") && e.contains(want), "{text:?}: {e}");
        }
    }
}
