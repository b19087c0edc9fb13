-- Latency and time-to-first-token percentiles (ms) per served model over the
-- last 24 hours, successful requests only.
SELECT model, count() AS requests,
       quantiles(0.5, 0.9, 0.99)(latency_ms) AS latency_p50_p90_p99,
       quantiles(0.5, 0.9, 0.99)(ttft_ms) AS ttft_p50_p90_p99
FROM sluice.transcripts FINAL
WHERE start >= now() - INTERVAL 1 DAY AND status = 200
GROUP BY model
ORDER BY requests DESC, model
