-- Spend per team, served model and day over the last 30 days: requests,
-- tokens and cost_usd (USD at the policy's prices; cache hits, errors and
-- unpriced models cost 0).
SELECT toDate(start) AS day, team, model,
       count() AS requests,
       sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens,
       sum(cost_usd) AS cost_usd
FROM sluice.transcripts FINAL
WHERE start >= now() - INTERVAL 30 DAY
GROUP BY day, team, model
ORDER BY day, cost_usd DESC, team, model
