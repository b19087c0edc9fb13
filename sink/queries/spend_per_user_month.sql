-- Spend per user per calendar month, this month and the 11 before it:
-- requests, tokens and cost_usd (USD at the policy's prices). A user name is
-- unique only within a team (trusted app keys name their own end users), so
-- team is part of the key.
SELECT toStartOfMonth(start) AS month, team, user,
       count() AS requests,
       sum(total_tokens) AS total_tokens,
       sum(cost_usd) AS cost_usd
FROM sluice.transcripts FINAL
WHERE start >= toStartOfMonth(now()) - INTERVAL 11 MONTH
GROUP BY month, team, user
ORDER BY month, cost_usd DESC, team, user
