-- Usage per user per day over the last 30 days: requests and tokens.
SELECT toDate(start) AS day, user,
       count() AS requests,
       sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens,
       sum(total_tokens) AS total_tokens
FROM sluice.transcripts FINAL
WHERE start >= now() - INTERVAL 30 DAY
GROUP BY day, user
ORDER BY day, total_tokens DESC, user
