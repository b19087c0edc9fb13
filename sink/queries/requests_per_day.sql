-- Requests per day, one per request id: FINAL collapses rows a replay
-- wrote twice (same user, start and request_id).
SELECT toDate(start) AS day, count() AS requests, uniqExact(request_id) AS request_ids
FROM sluice.transcripts FINAL
GROUP BY day
ORDER BY day
