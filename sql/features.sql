-- Generated from attribution/features/spec.py; do not edit by hand (`make sql` regenerates it).
-- Feature spec hash: e1da14f2c772433e
-- Source table placeholder `attribution.clicks` is replaced when the query job is built.
-- Input: click table with row_id INT64, ip, app, device, os, channel INT64, click_time TIMESTAMP,
--        is_attributed INT64 (training data); partition by DATE(click_time), cluster by ip.
WITH clicks AS (
  SELECT row_id, ip, app, device, os, channel, UNIX_SECONDS(click_time) AS t, is_attributed
  FROM `attribution.clicks`
),
d0_seen AS (
  SELECT ip, channel, t,
    LAG(t) OVER (PARTITION BY ip, channel ORDER BY t) AS prev_t,
    LEAD(t) OVER (PARTITION BY ip, channel ORDER BY t) AS next_t
  FROM (SELECT DISTINCT ip, channel, t FROM clicks) AS u
),
d0_marks AS (
  SELECT ip, t + 1 AS at_t, 1 AS w, CAST(NULL AS INT64) AS row_id FROM d0_seen
    WHERE prev_t IS NULL OR t - prev_t > 28800
  UNION ALL
  SELECT ip, t + 28801 AS at_t, -1 AS w, CAST(NULL AS INT64) AS row_id FROM d0_seen
    WHERE next_t IS NULL OR next_t - t > 28800
  UNION ALL
  SELECT ip, t AS at_t, 0 AS w, row_id FROM clicks
),
d0 AS (
  SELECT row_id, n FROM (
    SELECT row_id, SUM(w) OVER (PARTITION BY ip ORDER BY at_t RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS n
    FROM d0_marks
  ) AS s WHERE row_id IS NOT NULL
),
d1_seen AS (
  SELECT ip, app, t,
    LAG(t) OVER (PARTITION BY ip, app ORDER BY t) AS prev_t,
    LEAD(t) OVER (PARTITION BY ip, app ORDER BY t) AS next_t
  FROM (SELECT DISTINCT ip, app, t FROM clicks) AS u
),
d1_marks AS (
  SELECT ip, t + 1 AS at_t, 1 AS w, CAST(NULL AS INT64) AS row_id FROM d1_seen
    WHERE prev_t IS NULL OR t - prev_t > 28800
  UNION ALL
  SELECT ip, t + 28801 AS at_t, -1 AS w, CAST(NULL AS INT64) AS row_id FROM d1_seen
    WHERE next_t IS NULL OR next_t - t > 28800
  UNION ALL
  SELECT ip, t AS at_t, 0 AS w, row_id FROM clicks
),
d1 AS (
  SELECT row_id, n FROM (
    SELECT row_id, SUM(w) OVER (PARTITION BY ip ORDER BY at_t RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS n
    FROM d1_marks
  ) AS s WHERE row_id IS NOT NULL
),
d2_seen AS (
  SELECT ip, device, os, app, t,
    LAG(t) OVER (PARTITION BY ip, device, os, app ORDER BY t) AS prev_t,
    LEAD(t) OVER (PARTITION BY ip, device, os, app ORDER BY t) AS next_t
  FROM (SELECT DISTINCT ip, device, os, app, t FROM clicks) AS u
),
d2_marks AS (
  SELECT ip, device, os, t + 1 AS at_t, 1 AS w, CAST(NULL AS INT64) AS row_id FROM d2_seen
    WHERE prev_t IS NULL OR t - prev_t > 28800
  UNION ALL
  SELECT ip, device, os, t + 28801 AS at_t, -1 AS w, CAST(NULL AS INT64) AS row_id FROM d2_seen
    WHERE next_t IS NULL OR next_t - t > 28800
  UNION ALL
  SELECT ip, device, os, t AS at_t, 0 AS w, row_id FROM clicks
),
d2 AS (
  SELECT row_id, n FROM (
    SELECT row_id, SUM(w) OVER (PARTITION BY ip, device, os ORDER BY at_t RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS n
    FROM d2_marks
  ) AS s WHERE row_id IS NOT NULL
),
d3_seen AS (
  SELECT ip, device, os, channel, t,
    LAG(t) OVER (PARTITION BY ip, device, os, channel ORDER BY t) AS prev_t,
    LEAD(t) OVER (PARTITION BY ip, device, os, channel ORDER BY t) AS next_t
  FROM (SELECT DISTINCT ip, device, os, channel, t FROM clicks) AS u
),
d3_marks AS (
  SELECT ip, device, os, t + 1 AS at_t, 1 AS w, CAST(NULL AS INT64) AS row_id FROM d3_seen
    WHERE prev_t IS NULL OR t - prev_t > 28800
  UNION ALL
  SELECT ip, device, os, t + 28801 AS at_t, -1 AS w, CAST(NULL AS INT64) AS row_id FROM d3_seen
    WHERE next_t IS NULL OR next_t - t > 28800
  UNION ALL
  SELECT ip, device, os, t AS at_t, 0 AS w, row_id FROM clicks
),
d3 AS (
  SELECT row_id, n FROM (
    SELECT row_id, SUM(w) OVER (PARTITION BY ip, device, os ORDER BY at_t RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS n
    FROM d3_marks
  ) AS s WHERE row_id IS NOT NULL
),
d4_seen AS (
  SELECT ip, app, os, t,
    LAG(t) OVER (PARTITION BY ip, app, os ORDER BY t) AS prev_t,
    LEAD(t) OVER (PARTITION BY ip, app, os ORDER BY t) AS next_t
  FROM (SELECT DISTINCT ip, app, os, t FROM clicks) AS u
),
d4_marks AS (
  SELECT ip, app, t + 1 AS at_t, 1 AS w, CAST(NULL AS INT64) AS row_id FROM d4_seen
    WHERE prev_t IS NULL OR t - prev_t > 28800
  UNION ALL
  SELECT ip, app, t + 28801 AS at_t, -1 AS w, CAST(NULL AS INT64) AS row_id FROM d4_seen
    WHERE next_t IS NULL OR next_t - t > 28800
  UNION ALL
  SELECT ip, app, t AS at_t, 0 AS w, row_id FROM clicks
),
d4 AS (
  SELECT row_id, n FROM (
    SELECT row_id, SUM(w) OVER (PARTITION BY ip, app ORDER BY at_t RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS n
    FROM d4_marks
  ) AS s WHERE row_id IS NOT NULL
),
d5_seen AS (
  SELECT ip, device, t,
    LAG(t) OVER (PARTITION BY ip, device ORDER BY t) AS prev_t,
    LEAD(t) OVER (PARTITION BY ip, device ORDER BY t) AS next_t
  FROM (SELECT DISTINCT ip, device, t FROM clicks) AS u
),
d5_marks AS (
  SELECT ip, t + 1 AS at_t, 1 AS w, CAST(NULL AS INT64) AS row_id FROM d5_seen
    WHERE prev_t IS NULL OR t - prev_t > 28800
  UNION ALL
  SELECT ip, t + 28801 AS at_t, -1 AS w, CAST(NULL AS INT64) AS row_id FROM d5_seen
    WHERE next_t IS NULL OR next_t - t > 28800
  UNION ALL
  SELECT ip, t AS at_t, 0 AS w, row_id FROM clicks
),
d5 AS (
  SELECT row_id, n FROM (
    SELECT row_id, SUM(w) OVER (PARTITION BY ip ORDER BY at_t RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS n
    FROM d5_marks
  ) AS s WHERE row_id IS NOT NULL
)
SELECT
  c.row_id,
  c.ip,
  c.app,
  c.device,
  c.os,
  c.channel,
  c.t AS click_time,
  c.is_attributed,
  COUNT(*) OVER (PARTITION BY ip ORDER BY c.t RANGE BETWEEN 300 PRECEDING AND 1 PRECEDING) AS clicks_ip_1s_300s,
  COUNT(*) OVER (PARTITION BY ip ORDER BY c.t RANGE BETWEEN 3600 PRECEDING AND 301 PRECEDING) AS clicks_ip_301s_3600s,
  COUNT(*) OVER (PARTITION BY ip ORDER BY c.t RANGE BETWEEN 28800 PRECEDING AND 3601 PRECEDING) AS clicks_ip_3601s_28800s,
  COUNT(*) OVER (PARTITION BY ip, app ORDER BY c.t RANGE BETWEEN 300 PRECEDING AND 1 PRECEDING) AS clicks_ip_app_1s_300s,
  COUNT(*) OVER (PARTITION BY ip, app ORDER BY c.t RANGE BETWEEN 3600 PRECEDING AND 301 PRECEDING) AS clicks_ip_app_301s_3600s,
  COUNT(*) OVER (PARTITION BY ip, app ORDER BY c.t RANGE BETWEEN 28800 PRECEDING AND 3601 PRECEDING) AS clicks_ip_app_3601s_28800s,
  COUNT(*) OVER (PARTITION BY ip, app, os ORDER BY c.t RANGE BETWEEN 300 PRECEDING AND 1 PRECEDING) AS clicks_ip_app_os_1s_300s,
  COUNT(*) OVER (PARTITION BY ip, app, os ORDER BY c.t RANGE BETWEEN 3600 PRECEDING AND 301 PRECEDING) AS clicks_ip_app_os_301s_3600s,
  COUNT(*) OVER (PARTITION BY ip, app, os ORDER BY c.t RANGE BETWEEN 28800 PRECEDING AND 3601 PRECEDING) AS clicks_ip_app_os_3601s_28800s,
  COUNT(*) OVER (PARTITION BY ip, device, os ORDER BY c.t RANGE BETWEEN 300 PRECEDING AND 1 PRECEDING) AS clicks_ip_device_os_1s_300s,
  COUNT(*) OVER (PARTITION BY ip, device, os ORDER BY c.t RANGE BETWEEN 3600 PRECEDING AND 301 PRECEDING) AS clicks_ip_device_os_301s_3600s,
  COUNT(*) OVER (PARTITION BY ip, device, os ORDER BY c.t RANGE BETWEEN 28800 PRECEDING AND 3601 PRECEDING) AS clicks_ip_device_os_3601s_28800s,
  COUNT(*) OVER (PARTITION BY ip, device, os, app ORDER BY c.t RANGE BETWEEN 300 PRECEDING AND 1 PRECEDING) AS clicks_ip_device_os_app_1s_300s,
  COUNT(*) OVER (PARTITION BY ip, device, os, app ORDER BY c.t RANGE BETWEEN 3600 PRECEDING AND 301 PRECEDING) AS clicks_ip_device_os_app_301s_3600s,
  COUNT(*) OVER (PARTITION BY ip, device, os, app ORDER BY c.t RANGE BETWEEN 28800 PRECEDING AND 3601 PRECEDING) AS clicks_ip_device_os_app_3601s_28800s,
  COUNT(*) OVER (PARTITION BY ip, device, os, app, channel ORDER BY c.t RANGE BETWEEN 300 PRECEDING AND 1 PRECEDING) AS clicks_ip_device_os_app_channel_1s_300s,
  COUNT(*) OVER (PARTITION BY ip, device, os, app, channel ORDER BY c.t RANGE BETWEEN 3600 PRECEDING AND 301 PRECEDING) AS clicks_ip_device_os_app_channel_301s_3600s,
  COUNT(*) OVER (PARTITION BY ip, device, os, app, channel ORDER BY c.t RANGE BETWEEN 28800 PRECEDING AND 3601 PRECEDING) AS clicks_ip_device_os_app_channel_3601s_28800s,
  c.t - MAX(c.t) OVER (PARTITION BY ip ORDER BY c.t RANGE BETWEEN 28800 PRECEDING AND 1 PRECEDING) AS secs_since_prev_ip,
  c.t - MAX(c.t) OVER (PARTITION BY ip, app ORDER BY c.t RANGE BETWEEN 28800 PRECEDING AND 1 PRECEDING) AS secs_since_prev_ip_app,
  c.t - MAX(c.t) OVER (PARTITION BY ip, app, os ORDER BY c.t RANGE BETWEEN 28800 PRECEDING AND 1 PRECEDING) AS secs_since_prev_ip_app_os,
  c.t - MAX(c.t) OVER (PARTITION BY ip, device, os ORDER BY c.t RANGE BETWEEN 28800 PRECEDING AND 1 PRECEDING) AS secs_since_prev_ip_device_os,
  c.t - MAX(c.t) OVER (PARTITION BY ip, device, os, app ORDER BY c.t RANGE BETWEEN 28800 PRECEDING AND 1 PRECEDING) AS secs_since_prev_ip_device_os_app,
  c.t - MAX(c.t) OVER (PARTITION BY ip, device, os, app, channel ORDER BY c.t RANGE BETWEEN 28800 PRECEDING AND 1 PRECEDING) AS secs_since_prev_ip_device_os_app_channel,
  d0.n AS distinct_channel_per_ip_28800s,
  d1.n AS distinct_app_per_ip_28800s,
  d2.n AS distinct_app_per_ip_device_os_28800s,
  d3.n AS distinct_channel_per_ip_device_os_28800s,
  d4.n AS distinct_os_per_ip_app_28800s,
  d5.n AS distinct_device_per_ip_28800s,
  CASE MOD(DIV(c.t, 3600), 24) WHEN 0 THEN 0.0E0 WHEN 1 THEN 0.25881904510252074E0 WHEN 2 THEN 0.49999999999999994E0 WHEN 3 THEN 0.7071067811865475E0 WHEN 4 THEN 0.8660254037844386E0 WHEN 5 THEN 0.9659258262890683E0 WHEN 6 THEN 1.0E0 WHEN 7 THEN 0.9659258262890683E0 WHEN 8 THEN 0.8660254037844387E0 WHEN 9 THEN 0.7071067811865476E0 WHEN 10 THEN 0.49999999999999994E0 WHEN 11 THEN 0.258819045102521E0 WHEN 12 THEN 1.2246467991473532e-16 WHEN 13 THEN -0.2588190451025208E0 WHEN 14 THEN -0.4999999999999997E0 WHEN 15 THEN -0.7071067811865471E0 WHEN 16 THEN -0.8660254037844384E0 WHEN 17 THEN -0.9659258262890683E0 WHEN 18 THEN -1.0E0 WHEN 19 THEN -0.9659258262890684E0 WHEN 20 THEN -0.8660254037844386E0 WHEN 21 THEN -0.7071067811865477E0 WHEN 22 THEN -0.5000000000000004E0 WHEN 23 THEN -0.25881904510252157E0 END AS hour_sin,
  CASE MOD(DIV(c.t, 3600), 24) WHEN 0 THEN 1.0E0 WHEN 1 THEN 0.9659258262890683E0 WHEN 2 THEN 0.8660254037844387E0 WHEN 3 THEN 0.7071067811865476E0 WHEN 4 THEN 0.5000000000000001E0 WHEN 5 THEN 0.25881904510252074E0 WHEN 6 THEN 6.123233995736766e-17 WHEN 7 THEN -0.25881904510252063E0 WHEN 8 THEN -0.4999999999999998E0 WHEN 9 THEN -0.7071067811865475E0 WHEN 10 THEN -0.8660254037844387E0 WHEN 11 THEN -0.9659258262890682E0 WHEN 12 THEN -1.0E0 WHEN 13 THEN -0.9659258262890683E0 WHEN 14 THEN -0.8660254037844388E0 WHEN 15 THEN -0.7071067811865479E0 WHEN 16 THEN -0.5000000000000004E0 WHEN 17 THEN -0.25881904510252063E0 WHEN 18 THEN -1.8369701987210297e-16 WHEN 19 THEN 0.2588190451025203E0 WHEN 20 THEN 0.5000000000000001E0 WHEN 21 THEN 0.7071067811865474E0 WHEN 22 THEN 0.8660254037844384E0 WHEN 23 THEN 0.9659258262890681E0 END AS hour_cos
FROM clicks AS c
JOIN d0 ON d0.row_id = c.row_id
JOIN d1 ON d1.row_id = c.row_id
JOIN d2 ON d2.row_id = c.row_id
JOIN d3 ON d3.row_id = c.row_id
JOIN d4 ON d4.row_id = c.row_id
JOIN d5 ON d5.row_id = c.row_id
