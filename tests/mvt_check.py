#!/usr/bin/env python3
"""Independent check of Urbis vector tiles, with the Python `mapbox-vector-tile` decoder.

Usage: mvt_check.py BASE_URL LAYER SOURCE.geojson ZOOMS

Fetches every tile of LAYER at each zoom in ZOOMS (comma-separated) over the layer's bounds
(from its TileJSON), decodes it, and checks the MVT 2.1 rules and fidelity to the source:
every polygon ring has the right winding (exterior positive area by the surveyor's formula in
tile coordinates, holes negative) and non-zero area; no coordinate lies outside
extent + buffer; property values equal the source feature's (matched by feature id, which is
the source feature's "id"); points sit within one tile unit of the source position. Also checks
HTTP behaviour: gzip, ETag/304, 204 for empty tiles. Prints a JSON summary; exits 1 on the
first failure with a message naming the tile and the feature.
"""
import gzip
import json
import math
import sys
import urllib.request
import urllib.error

import mapbox_vector_tile

BUFFER = 64
EXTENT = 4096


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def lonlat_to_tile_float(lon, lat, z):
    lat = max(-85.0511287798066, min(85.0511287798066, lat))
    n = 2.0 ** z
    x = (lon + 180.0) / 360.0 * n
    s = math.sin(math.radians(lat))
    y = (0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)) * n
    return x, y


def grid(lon, lat):
    """The global 2^32 grid position (floor), as Urbis stores it."""
    x, y = lonlat_to_tile_float(lon, lat, 0)
    g = lambda v: min(max(math.floor(v * 2 ** 32), 0), 2 ** 32 - 1)
    return g(x), g(y)


def tile_coord(lon, lat, z, tx, ty):
    gx, gy = grid(lon, lat)
    shift = 32 - (z + 12)
    if shift >= 0:
        return (gx >> shift) - tx * EXTENT, (gy >> shift) - ty * EXTENT
    return (gx << -shift) - tx * EXTENT, (gy << -shift) - ty * EXTENT


def area2(ring):
    pts = ring[:-1] if len(ring) > 1 and ring[0] == ring[-1] else ring
    return sum(pts[i][0] * pts[(i + 1) % len(pts)][1] - pts[(i + 1) % len(pts)][0] * pts[i][1] for i in range(len(pts)))


def same_value(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def main():
    base, layer, source, zooms = sys.argv[1], sys.argv[2], sys.argv[3], [int(z) for z in sys.argv[4].split(",")]
    with open(source) as f:
        src = {feat["id"]: feat for feat in json.load(f)["features"]}
    status, _, body = get(f"{base}/tiles/{layer}.json")
    if status != 200:
        fail(f"TileJSON status {status}")
    tj = json.loads(body)
    w, s, e, n = tj["bounds"]
    summary = {"tiles": 0, "empty": 0, "features": 0, "polygons": 0, "rings": 0, "lines": 0, "points": 0, "props_checked": 0, "bytes": 0}
    for z in zooms:
        x0, y0 = lonlat_to_tile_float(w, n, z)
        x1, y1 = lonlat_to_tile_float(e, s, z)
        for tx in range(int(x0), int(x1) + 1):
            for ty in range(int(y0), int(y1) + 1):
                url = f"{base}/tiles/{layer}/{z}/{tx}/{ty}.mvt"
                status, headers, body = get(url, {"Accept-Encoding": "gzip"})
                summary["tiles"] += 1
                if status == 204:
                    summary["empty"] += 1
                    continue
                if status != 200:
                    fail(f"{url}: status {status} {body[:200]!r}")
                if headers.get("Content-Type") != "application/vnd.mapbox-vector-tile":
                    fail(f"{url}: content type {headers.get('Content-Type')}")
                if headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                summary["bytes"] += len(body)
                etag = headers.get("ETag")
                st304, _, _ = get(url, {"Accept-Encoding": "gzip", "If-None-Match": etag})
                if st304 != 304:
                    fail(f"{url}: If-None-Match {etag} gave {st304}, not 304")
                tile = mapbox_vector_tile.decode(body, default_options={"y_coord_down": True})
                if layer not in tile:
                    fail(f"{url}: no layer {layer} in {list(tile)}")
                lay = tile[layer]
                if lay["extent"] != EXTENT:
                    fail(f"{url}: extent {lay['extent']}")
                for feat in lay["features"]:
                    summary["features"] += 1
                    fid = feat.get("id")
                    if fid not in src:
                        fail(f"{url}: feature id {fid} not in the source")
                    want = {k: v for k, v in (src[fid].get("properties") or {}).items() if v is not None}
                    got = feat["properties"]
                    if set(got) != set(want) or not all(same_value(got[k], want[k]) for k in want):
                        fail(f"{url}: feature {fid} properties {got} != source {want}")
                    summary["props_checked"] += 1
                    geom = feat["geometry"]
                    t = geom["type"]
                    coords = geom["coordinates"]

                    def check_pt(p):
                        if not (-BUFFER <= p[0] <= EXTENT + BUFFER and -BUFFER <= p[1] <= EXTENT + BUFFER):
                            fail(f"{url}: feature {fid} coordinate {p} outside extent + buffer")

                    if t in ("Polygon", "MultiPolygon"):
                        polys = [coords] if t == "Polygon" else coords
                        for poly in polys:
                            summary["polygons"] += 1
                            for i, ring in enumerate(poly):
                                summary["rings"] += 1
                                for p in ring:
                                    check_pt(p)
                                a = area2(ring)
                                if a == 0:
                                    fail(f"{url}: feature {fid} has a ring with zero area")
                                if (i == 0) != (a > 0):
                                    fail(f"{url}: feature {fid} ring {i} has winding area {a} ({'exterior' if i == 0 else 'hole'})")
                    elif t in ("LineString", "MultiLineString"):
                        lines = [coords] if t == "LineString" else coords
                        for line in lines:
                            summary["lines"] += 1
                            if len(line) < 2:
                                fail(f"{url}: feature {fid} has a line of {len(line)} points")
                            for p in line:
                                check_pt(p)
                    elif t in ("Point", "MultiPoint"):
                        pts = [coords] if t == "Point" else coords
                        sg = src[fid]["geometry"]
                        spts = [sg["coordinates"]] if sg["type"] == "Point" else sg["coordinates"]
                        for p in pts:
                            summary["points"] += 1
                            check_pt(p)
                            near = min(max(abs(p[0] - ex), abs(p[1] - ey)) for ex, ey in (tile_coord(q[0], q[1], z, tx, ty) for q in spts))
                            if near > 1:
                                fail(f"{url}: point of feature {fid} at {p} is {near} units from the source")
                    else:
                        fail(f"{url}: unexpected geometry type {t}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
