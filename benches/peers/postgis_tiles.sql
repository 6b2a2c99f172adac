-- Times ST_AsMVT(ST_AsMVTGeom(...)) per tile, the way Martin serves a PostGIS table:
-- extent 4096, buffer 64, clipping on, every attribute as a property.
CREATE TEMP TABLE tiles (z int, x int, y int);
\copy tiles FROM 'TILES_CSV' WITH (FORMAT csv)
CREATE TEMP TABLE results (z int, x int, y int, seconds float8, bytes int);
DO $$
DECLARE t record; t0 timestamptz; n int; r int;
BEGIN
  FOR r IN 1..3 LOOP
    DELETE FROM results;
    FOR t IN SELECT * FROM tiles LOOP
      t0 := clock_timestamp();
      SELECT coalesce(length(ST_AsMVT(q, 'montevideo', 4096, 'geom')), 0) INTO n FROM (
        SELECT ST_AsMVTGeom(geom, ST_TileEnvelope(t.z, t.x, t.y), 4096, 64, true) AS geom,
               osm_id, osm_type, name, highway, building, amenity, addr_street, addr_housenumber,
               landuse, leisure, maxspeed, "natural", oneway, public_transport, railway, ref, shop,
               surface, tourism, waterway
          FROM montevideo
         WHERE geom && ST_TileEnvelope(t.z, t.x, t.y, margin => 64.0 / 4096)
      ) q WHERE geom IS NOT NULL;
      INSERT INTO results VALUES (t.z, t.x, t.y, extract(epoch FROM clock_timestamp() - t0), n);
    END LOOP;
  END LOOP;
END $$;
SELECT format('postgis z%s tiles=%s seconds=%s tiles_per_s=%s p50=%s p95=%s', z, count(*), round(sum(seconds)::numeric, 6),
              round((count(*) / sum(seconds))::numeric, 1),
              percentile_disc(0.5) WITHIN GROUP (ORDER BY bytes), percentile_disc(0.95) WITHIN GROUP (ORDER BY bytes))
  FROM results GROUP BY z ORDER BY z;
