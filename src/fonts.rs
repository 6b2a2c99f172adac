//! Glyphs for map labels: the signed-distance-field glyph ranges MapLibre asks for
//! (`/fonts/{fontstack}/{start}-{end}.pbf`, 256 code points a range), made from the TrueType
//! and OpenType fonts (`.ttf`, `.otf`, and each face of a `.ttc` collection) found in the
//! font folders: `--fonts DIR`, else Debian's DejaVu and Noto folders (`fonts-dejavu-core`,
//! `fonts-noto-core`, `fonts-noto-cjk`). A font is named as MapLibre styles name it: family
//! and style (`Noto Sans CJK SC Regular`, `DejaVu Sans Book`).
//!
//! Glyphs are rendered on request with FreeType and the `pbf_font_tools` /
//! `sdf_glyph_renderer` crates (Martin's stack: 24 px, a 3 px buffer, radius 8, cutoff 0.25)
//! and cached: a Latin range takes ~6 ms, a CJK range ~25 ms. In a stack of fonts the first
//! that has a code point gives its glyph, so a Latin font first and a CJK font after it
//! label a Chinese city's streets in both scripts.

use bytes::Bytes;
use pbf_font_tools::freetype::Library;
use pbf_font_tools::prost::Message;
use pbf_font_tools::{Fontstack, Glyphs};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// Where fonts are looked for without `--fonts`: Debian's font packages.
pub const DEFAULT_DIRS: &[&str] = &[
    "/usr/share/fonts/truetype/noto",
    "/usr/share/fonts/opentype/noto",
    "/usr/share/fonts/truetype/dejavu",
];

/// The fonts a default label stack takes, in order, when present: a Latin face, then CJK
/// faces (Simplified Chinese first: the platform serves Chinese cities).
const PREFERRED: &[&str] = &[
    "Noto Sans Regular",
    "DejaVu Sans Book",
    "Noto Sans CJK SC Regular",
    "Noto Sans CJK JP Regular",
    "Droid Sans Fallback Regular",
];

/// Most fonts in one requested stack.
pub const MAX_STACK: usize = 8;

/// Why a glyph range could not be served.
#[derive(Debug, thiserror::Error)]
pub enum FontError {
    /// A range that is not 256 code points from a multiple of 256.
    #[error(
        "{0:?}: a range is START-END.pbf with START a multiple of 256 up to 65280 and END = START + 255"
    )]
    BadRange(String),
    /// A stack naming too many fonts, or none.
    #[error("a font stack names 1 to {MAX_STACK} fonts, comma-separated")]
    BadStack,
    /// No fonts at all.
    #[error(
        "this server has no fonts (install fonts-dejavu-core or fonts-noto-cjk, or give --fonts DIR)"
    )]
    NoFonts,
    /// FreeType failed.
    #[error("glyph rendering failed: {0}")]
    Render(String),
}

/// A face of a font file.
#[derive(Debug, Clone)]
struct Face {
    path: PathBuf,
    index: isize,
}

/// The fonts found and a cache of rendered ranges.
pub struct Fonts {
    faces: BTreeMap<String, Face>,
    cache: moka::sync::Cache<String, Bytes>,
}

fn font_files(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() && depth < 4 {
            font_files(&p, out, depth + 1);
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "ttf" | "otf" | "ttc"))
        {
            out.push(p);
        }
    }
}

/// A face's name as styles write it: family and style, runs of spaces (and the separators
/// of a stack) made one space.
fn face_name(face: &pbf_font_tools::freetype::Face) -> Option<String> {
    let mut name = face.family_name()?;
    if let Some(style) = face.style_name() {
        name.push(' ');
        name.push_str(&style);
    }
    Some(
        name.split([' ', ',', '/'])
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

impl Fonts {
    /// Finds the fonts under `dirs` (recursively); the first face of a name wins.
    pub fn discover(dirs: &[PathBuf]) -> Fonts {
        let mut faces = BTreeMap::new();
        if let Ok(lib) = Library::init() {
            let mut files = Vec::new();
            for d in dirs {
                font_files(d, &mut files, 0);
            }
            for path in files {
                let Ok(first) = lib.new_face(&path, 0) else {
                    tracing::warn!(file = %path.display(), "not a font FreeType can read; skipped");
                    continue;
                };
                for index in 0..isize::from(first.num_faces().max(1)) {
                    let face = if index == 0 {
                        first.clone()
                    } else {
                        match lib.new_face(&path, index) {
                            Ok(f) => f,
                            Err(_) => continue,
                        }
                    };
                    if let Some(name) = face_name(&face) {
                        faces.entry(name).or_insert(Face {
                            path: path.clone(),
                            index,
                        });
                    }
                }
            }
        }
        Fonts {
            faces,
            cache: moka::sync::Cache::builder()
                .max_capacity(64 << 20)
                .weigher(|k: &String, v: &Bytes| {
                    u32::try_from(k.len() + v.len()).unwrap_or(u32::MAX)
                })
                .build(),
        }
    }

    /// The font names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.faces.keys().map(String::as_str)
    }

    /// True when no font was found.
    pub fn is_empty(&self) -> bool {
        self.faces.is_empty()
    }

    /// The stack the shipped styles label with: the preferred fonts present (a Latin one,
    /// then CJK), else the first font found; empty without fonts.
    pub fn default_stack(&self) -> Vec<String> {
        let mut stack: Vec<String> = Vec::new();
        let latin = PREFERRED[..2].iter().find(|n| self.faces.contains_key(**n));
        stack.extend(latin.map(|n| n.to_string()));
        stack.extend(
            PREFERRED[2..]
                .iter()
                .find(|n| self.faces.contains_key(**n))
                .map(|n| n.to_string()),
        );
        if stack.is_empty() {
            stack.extend(self.faces.keys().next().cloned());
        }
        stack
    }

    /// The glyph PBF of `stack` (comma-separated font names) for `range` (`0-255`): each code
    /// point from the first font of the stack that has it. Names the server lacks are left
    /// out; a stack of none it has falls back to the default stack, so that a style naming
    /// other fonts still gets labels.
    pub fn glyphs(&self, stack: &str, range: &str) -> Result<Bytes, FontError> {
        let bad = || FontError::BadRange(range.to_string());
        let (a, b) = range.split_once('-').ok_or_else(bad)?;
        let (start, end) = (
            a.parse::<u32>().map_err(|_| bad())?,
            b.parse::<u32>().map_err(|_| bad())?,
        );
        if start % 256 != 0 || end != start + 255 || start > 65_280 {
            return Err(bad());
        }
        let names: Vec<&str> = stack
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() || names.len() > MAX_STACK {
            return Err(FontError::BadStack);
        }
        // The fonts actually used name the cache entry: stacks of unknown names all fall back
        // to the default stack and share its entries (a caller cannot make the server render
        // the same glyphs again under new names).
        let mut used: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| self.faces.contains_key(*n))
            .collect();
        let fallback = self.default_stack();
        if used.is_empty() {
            used = fallback.iter().map(String::as_str).collect();
        }
        let faces: Vec<&Face> = used.iter().filter_map(|n| self.faces.get(*n)).collect();
        if faces.is_empty() {
            return Err(FontError::NoFonts);
        }
        let key = format!("{}|{start}", used.join(","));
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit);
        }
        let lib = Library::init().map_err(|e| FontError::Render(e.to_string()))?;
        let mut glyphs = Vec::new();
        let mut done = HashSet::new();
        for f in faces {
            let face = lib
                .new_face(&f.path, f.index)
                .map_err(|e| FontError::Render(format!("{}: {e}", f.path.display())))?;
            face.set_char_size(0, 24 << 6, 0, 0)
                .map_err(|e| FontError::Render(e.to_string()))?;
            for cp in start..=end {
                if done.contains(&cp) || face.get_char_index(cp as usize).is_none() {
                    continue;
                }
                // A glyph FreeType cannot draw is left out, as a missing one is.
                if let Ok(g) = pbf_font_tools::render_sdf_glyph(&face, cp, 3, 8, 0.25) {
                    done.insert(cp);
                    glyphs.push(g);
                }
            }
        }
        glyphs.sort_by_key(|g| g.id);
        let pbf = Glyphs {
            stacks: vec![Fontstack {
                name: used.join(", "),
                range: format!("{start}-{end}"),
                glyphs,
            }],
        }
        .encode_to_vec();
        let pbf = Bytes::from(pbf);
        self.cache.insert(key, pbf.clone());
        Ok(pbf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_stacks_are_checked() {
        let fonts = Fonts::discover(&[]);
        for bad in ["0-256", "1-256", "256", "a-b", "65536-65791"] {
            assert!(
                matches!(fonts.glyphs("X", bad), Err(FontError::BadRange(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            fonts.glyphs(" , ", "0-255"),
            Err(FontError::BadStack)
        ));
        assert!(matches!(
            fonts.glyphs("X", "0-255"),
            Err(FontError::NoFonts)
        ));
    }

    #[test]
    fn unknown_names_share_the_default_stacks_cache_entries() {
        let dirs: Vec<PathBuf> = DEFAULT_DIRS.iter().map(PathBuf::from).collect();
        let fonts = Fonts::discover(&dirs);
        assert!(
            !fonts.is_empty(),
            "no font in {DEFAULT_DIRS:?}: .ci/run installs fonts-dejavu-core"
        );
        let a = fonts.glyphs("Nope One", "0-255").unwrap();
        fonts.cache.run_pending_tasks();
        let entries = fonts.cache.entry_count();
        let b = fonts.glyphs("Nope Two,Nope Three", "0-255").unwrap();
        fonts.cache.run_pending_tasks();
        assert_eq!(a, b);
        assert_eq!(fonts.cache.entry_count(), entries, "one entry for both");
        assert_eq!(entries, 1);
    }
}
