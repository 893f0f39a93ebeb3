/*-------------------------------------------------------------------------
 *
 * http.h
 *		A small asynchronous HTTP client on libcurl's multi interface, for
 *		the outbox worker: many requests in flight, one wait on the
 *		process latch and every socket of them.
 *
 * Invariants:
 *	- Nothing here raises an ERROR while curl is inside a callback: response
 *	  bytes go to malloc'd buffers, failures become curl result codes.
 *	- A request's body and headers may hold secrets (the API key, opened
 *	  Stripe ids): pe_http_release wipes them, and no verbose output is ever
 *	  enabled.
 *
 * IDENTIFICATION
 *		src/outbox/http.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PE_HTTP_H
#define PE_HTTP_H

#include <curl/curl.h>

#include "lib/ilist.h"

/* Largest response body kept; a longer one fails the request */
#define PE_HTTP_MAX_RESPONSE	(1024 * 1024)

typedef struct PeHttp PeHttp;

/*
 * One request.  The caller fills the "in" part (all of it palloc'd or
 * owned by the caller, alive until the request is done), starts it with
 * pe_http_start, gets it back from pe_http_next_done with the "out" part
 * filled, and frees the out part with pe_http_release.
 */
typedef struct PeHttpRequest
{
	/* in */
	bool		post;			/* POST the body, else GET */
	char	   *url;
	char	   *body;			/* form-encoded; wiped by pe_http_release */
	size_t		body_len;
	struct curl_slist *headers; /* curl_slist; wiped and freed by release */
	long		timeout_ms;
	long		connect_timeout_ms;
	void	   *owner;			/* the caller's own pointer */

	/* out */
	CURLcode	result;			/* CURLE_OK when an HTTP answer arrived */
	long		status;			/* HTTP status, 0 without an answer */
	char	   *response;		/* malloc'd, NUL-terminated, or NULL */
	size_t		response_len;
	bool		response_too_long;
	char		request_id[64]; /* Request-Id header, "" when absent */
	int			retry_after_s;	/* Retry-After in seconds, -1 when absent */
	int			should_retry;	/* Stripe-Should-Retry: -1 absent, 0, 1 */
	bool		replayed;		/* Idempotent-Replayed: true (a saved answer) */
	bool		maybe_reached;	/* false only when the request provably
								 * never reached the server (issue 20) */

	/* private */
	dlist_node	node;			/* in PeHttp.active while started */
	CURL	   *easy;
	size_t		response_cap;
} PeHttpRequest;

extern PeHttp *pe_http_create(void);
extern void pe_http_destroy(PeHttp *http);
extern bool pe_http_start(PeHttp *http, PeHttpRequest *req);
extern int	pe_http_wait(PeHttp *http, long timeout_ms, uint32 wait_event_info);
extern PeHttpRequest *pe_http_next_done(PeHttp *http);
extern int	pe_http_in_flight(PeHttp *http);
extern void pe_http_release(PeHttpRequest *req);
extern const char *pe_http_error_text(PeHttpRequest *req);

#endif							/* PE_HTTP_H */
