// Package proxy is Sluice's HTTP side: the fasthttp API server, the OpenAI
// endpoints, the request scanner, the pooled upstream clients, the SSE relay
// and the one writer of OpenAI-shaped errors. It is the only package that
// imports fasthttp.
package proxy
