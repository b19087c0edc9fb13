-- The 20 users with the most tokens over the last 7 days.
SELECT user, count() AS requests, sum(total_tokens) AS total_tokens,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens
FROM sluice.transcripts FINAL
WHERE start >= now() - INTERVAL 7 DAY
GROUP BY user
ORDER BY total_tokens DESC, requests DESC, user
LIMIT 20
