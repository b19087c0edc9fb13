-- Error rates per model and status class per hour over the last 24 hours.
SELECT toStartOfHour(start) AS hour, model,
       count() AS requests,
       countIf(status >= 400 AND status < 500) AS client_errors,
       countIf(status >= 500) AS server_errors,
       countIf(status >= 400) / count() AS error_rate
FROM sluice.transcripts FINAL
WHERE start >= now() - INTERVAL 1 DAY
GROUP BY hour, model
ORDER BY hour, model
