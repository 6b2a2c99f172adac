//! Feature geometry as MVT commands: points, lines and polygons in tile coordinates become
//! `MoveTo`/`LineTo`/`ClosePath` commands with zigzag-encoded deltas. Repeated consecutive
//! points are removed, rings are oriented (exterior positive by the surveyor's formula in tile
//! coordinates, holes negative) and degenerate rings and lines are dropped here, so every
//! geometry that leaves this file follows the rules of the parent module. Each geometry also
//! carries its importance (area or length) for the byte budget.

use crate::tile::clip::TilePoint;

/// Geometry kinds of a tile feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileGeomKind {
    /// Points.
    Point,
    /// Lines.
    Line,
    /// Polygons.
    Polygon,
}

/// A feature's geometry as MVT commands, with its importance for the byte budget.
#[derive(Debug, Clone, PartialEq)]
pub struct TileGeometry {
    /// The kind.
    pub kind: TileGeomKind,
    /// MVT geometry commands.
    pub commands: Vec<u32>,
    /// Size on screen: area for polygons, length for lines, 0 for points (tile units).
    pub importance: f64,
}

/// A command integer: the command id (1 `MoveTo`, 2 `LineTo`, 7 `ClosePath`) and how many
/// times it repeats.
#[inline]
fn command(id: u32, count: usize) -> u32 {
    (id & 7) | ((count as u32) << 3)
}

#[inline]
fn zigzag(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

/// The pen position: command parameters are deltas from the previous point.
struct Cursor {
    at: [i32; 2],
}

impl Cursor {
    fn push(&mut self, out: &mut Vec<u32>, p: [i32; 2]) {
        out.push(zigzag(p[0] - self.at[0]));
        out.push(zigzag(p[1] - self.at[1]));
        self.at = p;
    }
}

fn to_i32(p: TilePoint) -> [i32; 2] {
    [p[0] as i32, p[1] as i32]
}

/// Twice the signed area of an open ring (positive = clockwise on screen, y down).
pub fn ring_area2(r: &[[i32; 2]]) -> i64 {
    let n = r.len();
    (0..n)
        .map(|i| {
            let (a, b) = (r[i], r[(i + 1) % n]);
            i64::from(a[0]) * i64::from(b[1]) - i64::from(b[0]) * i64::from(a[1])
        })
        .sum()
}

/// The points cast to `i32`, without repeated consecutive points.
fn clean(pts: &[TilePoint]) -> Vec<[i32; 2]> {
    let mut v: Vec<[i32; 2]> = pts.iter().map(|p| to_i32(*p)).collect();
    v.dedup();
    v
}

/// A reusable buffer for point geometries.
impl TileGeometry {
    /// An empty geometry buffer, to be filled by [`TileGeometry::set_points`] and reused
    /// feature after feature without allocating.
    pub fn empty() -> Self {
        TileGeometry {
            kind: TileGeomKind::Point,
            commands: Vec::new(),
            importance: 0.0,
        }
    }

    /// Refills this buffer with points (already inside the clip box); false when there are none.
    pub fn set_points(&mut self, points: impl ExactSizeIterator<Item = TilePoint>) -> bool {
        self.kind = TileGeomKind::Point;
        self.importance = 0.0;
        self.commands.clear();
        if points.len() == 0 {
            return false;
        }
        self.commands.push(command(1, points.len()));
        let mut c = Cursor { at: [0, 0] };
        for p in points {
            c.push(&mut self.commands, to_i32(p));
        }
        true
    }
}

/// Decodes a feature's geometry commands back into its parts (each `MoveTo` begins one;
/// `ClosePath` adds nothing), in tile coordinates. For clients of the server (the acceptance
/// checks, the simulator reading streets); an error names what is not MVT.
pub fn decode_commands(cmds: &[u32]) -> Result<Vec<Vec<[i64; 2]>>, String> {
    let unzz = |v: u32| i64::from(((v >> 1) as i32) ^ -((v & 1) as i32));
    let mut parts: Vec<Vec<[i64; 2]>> = Vec::new();
    let (mut i, mut at) = (0usize, [0i64, 0]);
    while i < cmds.len() {
        let (cmd, count) = (cmds[i] & 7, (cmds[i] >> 3) as usize);
        i += 1;
        match cmd {
            1 | 2 => {
                if cmd == 1 || parts.is_empty() {
                    parts.push(Vec::new());
                }
                for _ in 0..count {
                    let (Some(dx), Some(dy)) = (cmds.get(i), cmds.get(i + 1)) else {
                        return Err("a geometry ends early".into());
                    };
                    at = [at[0] + unzz(*dx), at[1] + unzz(*dy)];
                    i += 2;
                    if let Some(p) = parts.last_mut() {
                        p.push(at);
                    }
                }
            }
            7 if count == 1 => {}
            other => {
                return Err(format!(
                    "geometry command {other} (count {count}) is not MVT"
                ));
            }
        }
    }
    Ok(parts)
}

/// Encodes points (already inside the clip box).
pub fn encode_points(points: &[TilePoint]) -> Option<TileGeometry> {
    let mut g = TileGeometry::empty();
    g.set_points(points.iter().copied()).then_some(g)
}

/// Encodes lines (already clipped); drops those that collapse to a point.
pub fn encode_lines(lines: &[Vec<TilePoint>]) -> Option<TileGeometry> {
    let mut out = Vec::new();
    let mut c = Cursor { at: [0, 0] };
    let mut length = 0.0;
    for line in lines {
        let l = clean(line);
        if l.len() < 2 {
            continue;
        }
        out.push(command(1, 1));
        c.push(&mut out, l[0]);
        out.push(command(2, l.len() - 1));
        for w in l.windows(2) {
            length += f64::from(w[1][0] - w[0][0]).hypot(f64::from(w[1][1] - w[0][1]));
            c.push(&mut out, w[1]);
        }
    }
    (!out.is_empty()).then_some(TileGeometry {
        kind: TileGeomKind::Line,
        commands: out,
        importance: length,
    })
}

/// Encodes polygons, each `[exterior, holes...]` as open rings (already clipped), oriented
/// and cleaned per the module rules.
pub fn encode_polygons(polygons: &[Vec<Vec<TilePoint>>]) -> Option<TileGeometry> {
    let mut out = Vec::new();
    let mut c = Cursor { at: [0, 0] };
    let mut area = 0.0;
    for rings in polygons {
        for (i, ring) in rings.iter().enumerate() {
            let mut r = clean(ring);
            if r.len() > 1 && r.first() == r.last() {
                r.pop();
            }
            let a = if r.len() >= 3 { ring_area2(&r) } else { 0 };
            if a == 0 {
                if i == 0 {
                    break; // no exterior: its holes go with it
                }
                continue;
            }
            let exterior = i == 0;
            if (a > 0) != exterior {
                r.reverse();
            }
            if exterior {
                area += a.abs() as f64 / 2.0;
            } else {
                area -= a.abs() as f64 / 2.0;
            }
            out.push(command(1, 1));
            c.push(&mut out, r[0]);
            out.push(command(2, r.len() - 1));
            for p in &r[1..] {
                c.push(&mut out, *p);
            }
            out.push(command(7, 1));
        }
    }
    (!out.is_empty()).then_some(TileGeometry {
        kind: TileGeomKind::Polygon,
        commands: out,
        importance: area.max(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exterior_is_clockwise_and_hole_counter_clockwise_on_screen() {
        // Given counter-clockwise exterior and clockwise hole (on screen), both get flipped.
        let ext = vec![[0, 0], [0, 100], [100, 100], [100, 0]];
        let hole = vec![[10, 10], [20, 10], [20, 20], [10, 20]];
        let g = encode_polygons(&[vec![ext, hole]]).unwrap();
        // Decode the two rings back and check the signs.
        let rings = decode_rings(&g.commands);
        assert_eq!(rings.len(), 2);
        assert!(ring_area2(&rings[0]) > 0, "exterior must be positive");
        assert!(ring_area2(&rings[1]) < 0, "hole must be negative");
        assert_eq!(g.importance, 10_000.0 - 100.0);
    }

    #[test]
    fn degenerate_rings_and_repeated_points_go() {
        let flat = vec![[0, 0], [10, 0], [20, 0]];
        assert!(encode_polygons(&[vec![flat]]).is_none());
        let g = encode_lines(&[vec![[0, 0], [0, 0], [5, 5], [5, 5]]]).unwrap();
        assert_eq!(g.commands, vec![command(1, 1), 0, 0, command(2, 1), 10, 10]);
        assert!(encode_lines(&[vec![[3, 3], [3, 3]]]).is_none());
    }

    /// Reads lines (or points, as one-point runs joined) back from commands (test helper).
    fn decode_lines(cmds: &[u32]) -> Vec<Vec<[i32; 2]>> {
        let (mut i, mut at, mut lines) = (0, [0i32, 0], Vec::new());
        let unzz = |v: u32| ((v >> 1) as i32) ^ -((v & 1) as i32);
        while i < cmds.len() {
            let (id, count) = (cmds[i] & 7, cmds[i] >> 3);
            i += 1;
            if id == 1 {
                lines.push(Vec::new());
            }
            for _ in 0..count {
                at = [at[0] + unzz(cmds[i]), at[1] + unzz(cmds[i + 1])];
                i += 2;
                if let Some(l) = lines.last_mut() {
                    l.push(at);
                }
            }
        }
        lines
    }

    fn coord() -> impl Strategy<Value = i64> {
        -64i64..4160
    }

    /// A convex polygon (points on a circle at increasing angles), positive area on screen.
    fn convex_ring() -> impl Strategy<Value = Vec<[i64; 2]>> {
        (
            200i64..3900,
            200i64..3900,
            20i64..190,
            proptest::collection::btree_set(0u32..360, 3..24),
        )
            .prop_map(|(cx, cy, r, angles)| {
                let mut ring: Vec<[i64; 2]> = angles
                    .into_iter()
                    .map(|a| {
                        let t = f64::from(a).to_radians();
                        [
                            cx + (r as f64 * t.cos()).round() as i64,
                            cy + (r as f64 * t.sin()).round() as i64,
                        ]
                    })
                    .collect();
                ring.dedup();
                if ring.len() > 1 && ring.first() == ring.last() {
                    ring.pop();
                }
                ring
            })
    }

    proptest! {
        #[test]
        fn points_encode_then_decode_to_themselves(pts in proptest::collection::vec((coord(), coord()).prop_map(|(x, y)| [x, y]), 1..50)) {
            let g = encode_points(&pts).unwrap();
            let back: Vec<[i64; 2]> = decode_lines(&g.commands).concat().iter().map(|p| [i64::from(p[0]), i64::from(p[1])]).collect();
            prop_assert_eq!(back, pts);
        }

        #[test]
        fn lines_encode_then_decode_to_themselves(lines in proptest::collection::vec(proptest::collection::vec((coord(), coord()).prop_map(|(x, y)| [x, y]), 2..30), 1..5)) {
            let mut valid: Vec<Vec<[i64; 2]>> = lines.into_iter().map(|mut l| { l.dedup(); l }).filter(|l| l.len() >= 2).collect();
            valid.retain(|l| !l.is_empty());
            prop_assume!(!valid.is_empty());
            let g = encode_lines(&valid).unwrap();
            let back: Vec<Vec<[i64; 2]>> = decode_lines(&g.commands).into_iter().map(|l| l.iter().map(|p| [i64::from(p[0]), i64::from(p[1])]).collect()).collect();
            prop_assert_eq!(back, valid);
        }

        #[test]
        fn valid_polygons_encode_then_decode_to_themselves(ring in convex_ring()) {
            let a = ring_area2(&ring.iter().map(|p| [p[0] as i32, p[1] as i32]).collect::<Vec<_>>());
            prop_assume!(ring.len() >= 3 && a > 0);
            let g = encode_polygons(&[vec![ring.clone()]]).unwrap();
            let back = decode_rings(&g.commands);
            prop_assert_eq!(back.len(), 1);
            prop_assert_eq!(back[0].iter().map(|p| [i64::from(p[0]), i64::from(p[1])]).collect::<Vec<_>>(), ring);
        }
    }

    /// Reads polygon rings back from commands (test helper).
    fn decode_rings(cmds: &[u32]) -> Vec<Vec<[i32; 2]>> {
        let (mut i, mut at, mut rings) = (0, [0i32, 0], Vec::new());
        let unzz = |v: u32| ((v >> 1) as i32) ^ -((v & 1) as i32);
        let mut cur = Vec::new();
        while i < cmds.len() {
            let (id, count) = (cmds[i] & 7, cmds[i] >> 3);
            i += 1;
            if id == 7 {
                rings.push(std::mem::take(&mut cur));
                continue;
            }
            for _ in 0..count {
                at = [at[0] + unzz(cmds[i]), at[1] + unzz(cmds[i + 1])];
                i += 2;
                cur.push(at);
            }
        }
        rings
    }
}
