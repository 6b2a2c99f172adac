"""Invalid polygons for tests/import_repair.rs, and the check of what Urbis made of them.

  repair_check.py make SRC.geojson.gz OUT.geojson EXPECTED.json
      Natural Earth countries, each made invalid one of four ways (by feature index mod 4):
      rings reversed; a shell vertex pulled across its ring; a square hole put on a shell
      vertex (half outside, crossing the shell); two neighbouring shell vertices swapped (a
      bow-tie). EXPECTED holds, per feature, GEOS's make_valid area (shapely) in grid units
      of Urbis's store (Web Mercator, 2^32 units around the world, latitudes clamped at
      +-85.0511 as the importer clamps them).
  repair_check.py dense SRC.geojson.gz OUT.geojson VERTICES
      The bench's hard case (benches/peers/repair.sh): the same countries densified to about
      VERTICES vertices in all (points put along each edge), with a crossing injected every
      2,000 vertices of every ring (two neighbouring vertices swapped: a tiny bow-tie), as
      coastlines digitised at 1:10 m cross themselves. Nearly every polygon is invalid.
  repair_check.py valid IMPORTED.json
      Prints a JSON list of the imported features GEOS finds invalid, with the reason.
  repair_check.py check EXPECTED.json IMPORTED.json
      IMPORTED: [{"index": source index, "parts": [[[x, y], ...] ring, ...] polygon, ...]}]
      in grid units. Prints a JSON report: invalid features, area mismatches beyond 0.1 %.
"""
import gzip, json, math, sys

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, mapping, shape

LAT = 85.0511287798066


def to_grid(a):
    lon, lat = a[:, 0], np.clip(a[:, 1], -LAT, LAT)
    s = np.sin(np.radians(lat))
    x = (lon + 180.0) / 360.0 * 2.0**32
    y = (0.5 - np.log((1 + s) / (1 - s)) / (4 * math.pi)) * 2.0**32
    return np.column_stack([x, y])


def rings_of(geom):
    if geom["type"] == "Polygon":
        return [geom["coordinates"]]
    return geom["coordinates"]


def invalidate(k, polys):
    # The largest part (most shell vertices) takes the change.
    big = max(range(len(polys)), key=lambda i: len(polys[i][0]))
    shell = [list(p) for p in polys[big][0]]
    n = len(shell) - 1  # closed ring
    how = k % 4
    if how == 0:
        polys = [[list(reversed(r)) for r in p] for p in polys]
        return "reversed", polys
    if how == 1 and n >= 6:
        i, j = n // 3, (n // 3 + n // 2) % n
        cx = sum(p[0] for p in shell[:n]) / n
        cy = sum(p[1] for p in shell[:n]) / n
        px, py = shell[j]
        shell[i] = [px + (px - cx) * 0.05, py + (py - cy) * 0.05]
        if i == 0:
            shell[n] = shell[0]
        polys[big] = [shell] + polys[big][1:]
        return "pulled", polys
    if how == 2:
        xs = [p[0] for p in shell]
        ys = [p[1] for p in shell]
        d = max(max(xs) - min(xs), max(ys) - min(ys)) * 0.02
        vx, vy = shell[n // 2]
        hole = [[vx - d, vy - d], [vx - d, vy + d], [vx + d, vy + d], [vx + d, vy - d], [vx - d, vy - d]]
        polys[big] = polys[big] + [hole]
        return "hole-on-shell", polys
    if n >= 5:
        i = n // 2
        shell[i], shell[i + 1] = shell[i + 1], shell[i]
        polys[big] = [shell] + polys[big][1:]
        return "bow-tie", polys
    return "unchanged", polys


def make(src, out, expected):
    fc = json.load(gzip.open(src))
    feats, exp = [], []
    for k, f in enumerate(fc["features"]):
        g = f["geometry"]
        if g is None or not g["coordinates"]:
            feats.append(f)
            exp.append(None)
            continue
        how, polys = invalidate(k, json.loads(json.dumps(rings_of(g))))
        geom = {"type": "MultiPolygon", "coordinates": polys}
        feats.append({"type": "Feature", "properties": {"i": k, "how": how}, "geometry": geom})
        grid = shapely.transform(shape(geom), to_grid)
        valid = shapely.make_valid(grid)
        exp.append({"how": how, "area": valid.area, "valid_before": bool(grid.is_valid)})
    json.dump({"type": "FeatureCollection", "features": feats}, open(out, "w"))
    json.dump(exp, open(expected, "w"))


def dense(src, out, vertices):
    fc = json.load(gzip.open(src))
    total = sum(len(r) for f in fc["features"] if f["geometry"] for p in rings_of(f["geometry"]) for r in p)
    k = max(1, math.ceil(int(vertices) / max(total, 1)))
    feats = []
    for i, f in enumerate(fc["features"]):
        g = f["geometry"]
        if g is None or not g["coordinates"]:
            continue
        polys = []
        for p in rings_of(g):
            rings = []
            for r in p:
                a = np.asarray(r, dtype=float)[:-1]
                b = np.roll(a, -1, axis=0)
                t = (np.arange(k) / k)[None, :, None]
                d = (a[:, None, :] + (b - a)[:, None, :] * t).reshape(-1, 2)
                for j in range(1000, len(d) - 1, 2000):
                    d[[j, j + 1]] = d[[j + 1, j]]
                d = np.vstack([d, d[:1]])
                rings.append(d.round(7).tolist())
            polys.append(rings)
        feats.append({"type": "Feature", "properties": {"i": i},
                      "geometry": {"type": "MultiPolygon", "coordinates": polys}})
    json.dump({"type": "FeatureCollection", "features": feats}, open(out, "w"))


def valid(imported):
    bad = []
    for f in json.load(open(imported)):
        g = MultiPolygon([Polygon(p[0], p[1:]) for p in f["parts"]])
        if not g.is_valid:
            bad.append([f["index"], shapely.is_valid_reason(g)])
    print(json.dumps(bad))


def check(expected, imported):
    exp = json.load(open(expected))
    got = json.load(open(imported))
    report = {"features": 0, "invalid": [], "area": [], "worst": 0.0, "made_invalid": 0}
    for e in exp:
        if e and not e["valid_before"]:
            report["made_invalid"] += 1
    for f in got:
        e = exp[f["index"]]
        polys = [Polygon(p[0], p[1:]) for p in f["parts"]]
        g = MultiPolygon(polys)
        report["features"] += 1
        if not g.is_valid:
            report["invalid"].append([f["index"], e["how"], shapely.is_valid_reason(g)])
        rel = abs(g.area - e["area"]) / e["area"]
        report["worst"] = max(report["worst"], rel)
        if rel > 0.001:
            report["area"].append([f["index"], e["how"], g.area, e["area"], rel])
    print(json.dumps(report))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(*sys.argv[2:5])
    elif sys.argv[1] == "dense":
        dense(*sys.argv[2:5])
    elif sys.argv[1] == "valid":
        valid(sys.argv[2])
    else:
        check(*sys.argv[2:4])
