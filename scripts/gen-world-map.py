#!/usr/bin/env python3
"""Builds admin/assets/world.tsv, the country shapes of the dashboard's world map.

Source: Natural Earth 1:110m Admin 0 countries (public domain, naturalearthdata.com), as
redistributed in TopoJSON by the npm package world-atlas 2.0.2 (countries-110m.json; the package
is ISC-licensed, the data public domain). ISO 3166-1 numeric ids are mapped to alpha-2 codes with
Debian's iso-codes (/usr/share/iso-codes/json/iso_3166-1.json; codes are the standard's facts,
nothing of iso-codes is shipped). Country names are Natural Earth's.

Output, one country per line: `CC<TAB>name<TAB>SVG path` in an equirectangular projection of
longitude -180..180 and latitude 84..-58 onto a 960 x 380 box (Antarctica dropped), coordinates
rounded to whole units, repeated points removed and rings smaller than a unit dropped.

Usage:  npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz
        python3 scripts/gen-world-map.py package/countries-110m.json package/countries-50m.json \
            > admin/assets/world.tsv
"""
import json
import sys

W, H = 960.0, 380.0
LAT_TOP, LAT_BOTTOM = 84.0, -58.0
# Natural Earth 110m features without an ISO numeric id in world-atlas.
EXTRA = {"Kosovo": "XK", "N. Cyprus": "CY", "Somaliland": "SO"}


def main():
    topo = json.load(open(sys.argv[1]))
    iso = json.load(open("/usr/share/iso-codes/json/iso_3166-1.json"))["3166-1"]
    by_num = {c["numeric"]: c["alpha_2"] for c in iso}
    sx, sy = topo["transform"]["scale"]
    tx, ty = topo["transform"]["translate"]
    arcs = []
    for arc in topo["arcs"]:
        x = y = 0
        pts = []
        for dx, dy in arc:
            x += dx
            y += dy
            pts.append((x * sx + tx, y * sy + ty))
        arcs.append(pts)

    def arc_pts(i):
        return arcs[i] if i >= 0 else list(reversed(arcs[~i]))

    def project(lon, lat):
        lat = max(min(lat, LAT_TOP), LAT_BOTTOM)
        return (round((lon + 180.0) / 360.0 * W), round((LAT_TOP - lat) / (LAT_TOP - LAT_BOTTOM) * H))

    def ring_path(ring):
        # Rings that cross the antimeridian (Russia's Chukotka, Fiji) are unwrapped: a jump of
        # more than 180 degrees continues past the map's edge, which the viewBox clips, instead
        # of drawing a stripe across the whole map.
        lonlat = []
        for i in ring:
            for lon, lat in arc_pts(i):
                if lonlat:
                    prev = lonlat[-1][0]
                    while lon - prev > 180:
                        lon -= 360
                    while prev - lon > 180:
                        lon += 360
                lonlat.append((lon, lat))
        # Keep the ring's bulk on the map: shift it back if its mean fell off one side.
        mean = sum(p[0] for p in lonlat) / max(len(lonlat), 1)
        shift = -360 if mean > 180 else 360 if mean < -180 else 0
        pts = []
        for lon, lat in lonlat:
            q = project(lon + shift, lat)
            if not pts or pts[-1] != q:
                pts.append(q)
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        if len(pts) < 3 or (max(xs) - min(xs) < 1 and max(ys) - min(ys) < 1):
            return ""
        return "M" + "L".join(f"{x},{y}" for x, y in pts) + "Z"

    out = {}
    for g in topo["objects"]["countries"]["geometries"]:
        name = g["properties"]["name"]
        cc = by_num.get(g.get("id", ""), EXTRA.get(name))
        if cc is None or cc == "AQ":
            continue
        polys = g["arcs"] if g["type"] == "MultiPolygon" else [g["arcs"]]
        d = "".join(ring_path(r) for poly in polys for r in poly)
        if not d:
            continue
        if cc in out:
            out[cc] = (out[cc][0], out[cc][1] + d)
        else:
            out[cc] = (name, d)
    # Countries too small for 1:110m (Singapore, Hong Kong, Malta, ...): their names from the
    # 1:50m file, without a shape (the map cannot show them; tables name them).
    if len(sys.argv) > 2:
        for g in json.load(open(sys.argv[2]))["objects"]["countries"]["geometries"]:
            cc = by_num.get(g.get("id", ""))
            if cc and cc != "AQ" and cc not in out:
                out[cc] = (g["properties"]["name"], "")
    print("# Natural Earth 1:110m Admin 0 countries (public domain), via world-atlas 2.0.2;")
    print("# names of smaller ones from 1:50m; made by scripts/gen-world-map.py.")
    print("# CC<TAB>name<TAB>SVG path in a 960 x 380 box (empty: too small for the map).")
    for cc in sorted(out):
        name, d = out[cc]
        print(f"{cc}\t{name}\t{d}")


main()
