-- Cache savings per day over the last 30 days: answers served from the cache
-- and the tokens the upstream did not have to generate for them.
SELECT toDate(start) AS day,
       countIf(cache_status = 'hit' OR cache_status = 'coalesced') AS cached_answers,
       count() AS requests,
       sumIf(total_tokens, cache_status = 'hit' OR cache_status = 'coalesced') AS tokens_saved
FROM sluice.transcripts FINAL
WHERE start >= now() - INTERVAL 30 DAY
GROUP BY day
ORDER BY day
