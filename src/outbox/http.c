/*-------------------------------------------------------------------------
 *
 * http.c
 *		Asynchronous HTTP requests for the outbox worker: libcurl's multi
 *		interface driven by curl_multi_socket_action, with every curl socket
 *		in one epoll set that sits, with the process latch and postmaster
 *		death, in one WaitEventSet.
 *
 * Invariants:
 *	- One PeHttp per process (the outbox worker), created outside any
 *	  transaction; its memory lives in TopMemoryContext.
 *	- curl callbacks never call palloc or ereport: a longjmp out of libcurl
 *	  would corrupt it.  Response bytes go to malloc'd buffers.
 *	- Every easy handle is in PeHttp.active from pe_http_start until
 *	  pe_http_next_done returns it, so pe_http_destroy (also run at process
 *	  exit) frees every handle on every path.
 *	- No CURLOPT_VERBOSE, no curl error buffer: nothing curl prints can leak
 *	  the Authorization header or a request body.
 *
 * IDENTIFICATION
 *		src/outbox/http.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/epoll.h>
#include <unistd.h>

#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "base/pg_compat.h"
#include "outbox/http.h"

/* Events taken from the epoll set per call */
#define HTTP_EPOLL_BATCH		64

struct PeHttp
{
	CURLM	   *multi;
	int			epfd;			/* epoll set of curl's sockets */
	WaitEventSet *wait_set;		/* latch, postmaster death, epfd */
	TimestampTz timer_at;		/* curl's timeout, or 0 for none */
	dlist_head	active;			/* PeHttpRequest started, not yet returned */
	int			in_flight;
};

static bool http_global_done = false;

/* ---------------------------------------------------------------------------
 * curl callbacks (no palloc, no ereport)
 * ---------------------------------------------------------------------------
 */

/* CURLMOPT_SOCKETFUNCTION: keep the epoll set in step with curl's sockets. */
static int
http_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	PeHttp	   *http = (PeHttp *) userp;
	struct epoll_event ev;

	if (what == CURL_POLL_REMOVE)
	{
		/* the socket may already be closed: then epoll dropped it itself */
		(void) epoll_ctl(http->epfd, EPOLL_CTL_DEL, s, NULL);
		curl_multi_assign(http->multi, s, NULL);
		return 0;
	}

	memset(&ev, 0, sizeof(ev));
	ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) |
		((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
	ev.data.fd = s;
	if (epoll_ctl(http->epfd, socketp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s, &ev) != 0)
	{
		/* a reused descriptor number: try the other operation */
		if (epoll_ctl(http->epfd, socketp ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, s, &ev) != 0)
			return -1;
	}
	if (socketp == NULL)
		curl_multi_assign(http->multi, s, (void *) http);
	return 0;
}

/* CURLMOPT_TIMERFUNCTION: remember when curl wants to be called back. */
static int
http_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	PeHttp	   *http = (PeHttp *) userp;

	if (timeout_ms < 0)
		http->timer_at = 0;
	else
		http->timer_at = GetCurrentTimestamp() + (TimestampTz) timeout_ms * 1000;
	return 0;
}

/* CURLOPT_WRITEFUNCTION: append to the malloc'd response, up to the cap. */
static size_t
http_write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	PeHttpRequest *req = (PeHttpRequest *) userp;
	size_t		n = size * nmemb;

	if (req->response_len + n > PE_HTTP_MAX_RESPONSE)
	{
		req->response_too_long = true;
		return 0;				/* CURLE_WRITE_ERROR */
	}
	if (req->response_len + n + 1 > req->response_cap)
	{
		size_t		cap = Max(req->response_cap * 2, req->response_len + n + 1);
		char	   *p;

		cap = Max(cap, 1024);
		p = realloc(req->response, cap);
		if (p == NULL)
			return 0;
		req->response = p;
		req->response_cap = cap;
	}
	memcpy(req->response + req->response_len, data, n);
	req->response_len += n;
	req->response[req->response_len] = '\0';
	return n;
}

/* Does header line h (length len) start with name (lower case, with ':')? */
static bool
http_header_is(const char *h, size_t len, const char *name)
{
	size_t		n = strlen(name);

	return len >= n && pg_strncasecmp(h, name, n) == 0;
}

/* Copy the value of header line h after its name of nlen bytes, trimmed. */
static void
http_header_value(const char *h, size_t len, size_t nlen, char *out, size_t outsize)
{
	size_t		i = nlen;
	size_t		j = 0;

	while (i < len && (h[i] == ' ' || h[i] == '\t'))
		i++;
	while (len > i && (h[len - 1] == '\r' || h[len - 1] == '\n' ||
					   h[len - 1] == ' ' || h[len - 1] == '\t'))
		len--;
	/*
	 * Printable ASCII only: the value reaches the database (a failure's
	 * details), and bytes from the network need not be valid text, nor
	 * whole characters once cut to outsize.
	 */
	while (i < len && j + 1 < outsize)
	{
		unsigned char c = (unsigned char) h[i++];

		out[j++] = (c >= 0x20 && c < 0x7f) ? (char) c : '?';
	}
	out[j] = '\0';
}

/*
 * CURLOPT_HEADERFUNCTION: pick Request-Id, Retry-After, Stripe-Should-Retry
 * and Idempotent-Replayed.
 */
static size_t
http_header_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	PeHttpRequest *req = (PeHttpRequest *) userp;
	size_t		len = size * nmemb;
	char		value[64];

	if (http_header_is(data, len, "HTTP/"))
	{
		/* a new header block (after 100 Continue, say): start over */
		req->request_id[0] = '\0';
		req->retry_after_s = -1;
		req->should_retry = -1;
		req->replayed = false;
	}
	else if (http_header_is(data, len, "request-id:"))
		http_header_value(data, len, 11, req->request_id, sizeof(req->request_id));
	else if (http_header_is(data, len, "retry-after:"))
	{
		char	   *end;
		long		v;

		http_header_value(data, len, 12, value, sizeof(value));
		v = strtol(value, &end, 10);
		/* delta-seconds only; an HTTP date is ignored */
		if (end != value && *end == '\0' && v >= 0)
			req->retry_after_s = (int) Min(v, 3600);
	}
	else if (http_header_is(data, len, "stripe-should-retry:"))
	{
		http_header_value(data, len, 20, value, sizeof(value));
		if (pg_strcasecmp(value, "true") == 0)
			req->should_retry = 1;
		else if (pg_strcasecmp(value, "false") == 0)
			req->should_retry = 0;
	}
	else if (http_header_is(data, len, "idempotent-replayed:"))
	{
		http_header_value(data, len, 20, value, sizeof(value));
		req->replayed = (pg_strcasecmp(value, "true") == 0);
	}
	return len;
}

/*
 * http_maybe_reached
 *		May the request of easy, finished with rc, have reached the server?
 *		False only when it provably did not: the name did not resolve, the
 *		connection was refused or never completed, or the TLS handshake
 *		failed (then not one byte of the request was written), or curl never
 *		got as far as the transfer (CURLINFO_PRETRANSFER_TIME_T is 0: a
 *		timeout while connecting, say).  Any other failure (a timeout or a
 *		reset after the request was written) may have reached it.
 */
static bool
http_maybe_reached(CURL *easy, CURLcode rc)
{
	curl_off_t	pretransfer = 0;

	switch (rc)
	{
		case CURLE_OK:
			return true;
		case CURLE_FAILED_INIT:
		case CURLE_UNSUPPORTED_PROTOCOL:
		case CURLE_URL_MALFORMAT:
		case CURLE_COULDNT_RESOLVE_PROXY:
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_CONNECT:
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_CIPHER:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_ENGINE_NOTFOUND:
		case CURLE_SSL_ENGINE_SETFAILED:
			return false;
		default:
			break;
	}
	if (easy != NULL &&
		curl_easy_getinfo(easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer) == CURLE_OK &&
		pretransfer == 0)
		return false;
	return true;
}

/* ---------------------------------------------------------------------------
 * The client
 * ---------------------------------------------------------------------------
 */

/*
 * pe_http_create
 *		A client with no request in flight.  Raises if curl or epoll cannot
 *		be set up (caller: the worker, at start, outside a transaction).
 */
PeHttp *
pe_http_create(void)
{
	PeHttp	   *http;

	if (!http_global_done)
	{
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			ereport(ERROR,
					(errcode(ERRCODE_SYSTEM_ERROR),
					 errmsg("could not initialize libcurl")));
		http_global_done = true;
	}

	http = MemoryContextAllocZero(TopMemoryContext, sizeof(PeHttp));
	dlist_init(&http->active);
	http->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (http->epfd < 0)
		ereport(ERROR,
				(errcode_for_socket_access(),
				 errmsg("could not create epoll set: %m")));
	http->multi = curl_multi_init();
	if (http->multi == NULL)
	{
		close(http->epfd);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl multi handle")));
	}
	curl_multi_setopt(http->multi, CURLMOPT_SOCKETFUNCTION, http_socket_cb);
	curl_multi_setopt(http->multi, CURLMOPT_SOCKETDATA, http);
	curl_multi_setopt(http->multi, CURLMOPT_TIMERFUNCTION, http_timer_cb);
	curl_multi_setopt(http->multi, CURLMOPT_TIMERDATA, http);

	http->wait_set = pe_CreateWaitEventSet_top(3);
	AddWaitEventToSet(http->wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(http->wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(http->wait_set, WL_SOCKET_READABLE, http->epfd, NULL, NULL);
	return http;
}

/* Wipe and free what curl and the caller gave a finished request. */
void
pe_http_release(PeHttpRequest *req)
{
	struct curl_slist *h;

	if (req->body != NULL)
		explicit_bzero(req->body, req->body_len);
	for (h = req->headers; h != NULL; h = h->next)
		explicit_bzero(h->data, strlen(h->data));
	curl_slist_free_all(req->headers);
	req->headers = NULL;
	if (req->response != NULL)
	{
		explicit_bzero(req->response, req->response_len);
		free(req->response);
		req->response = NULL;
	}
	req->response_len = 0;
	req->response_cap = 0;
}

/*
 * pe_http_destroy
 *		Abort every request in flight, wipe and free them and the client.
 *		Safe at process exit and after an error.
 */
void
pe_http_destroy(PeHttp *http)
{
	dlist_mutable_iter iter;

	if (http == NULL)
		return;
	dlist_foreach_modify(iter, &http->active)
	{
		PeHttpRequest *req = dlist_container(PeHttpRequest, node, iter.cur);

		dlist_delete(&req->node);
		curl_multi_remove_handle(http->multi, req->easy);
		curl_easy_cleanup(req->easy);
		req->easy = NULL;
		pe_http_release(req);
	}
	curl_multi_cleanup(http->multi);
	close(http->epfd);
	FreeWaitEventSet(http->wait_set);
	pfree(http);
}

/*
 * pe_http_start
 *		Put req in flight.  False (with nothing left allocated) if curl
 *		refuses it; the caller treats that as a failed attempt.
 */
bool
pe_http_start(PeHttp *http, PeHttpRequest *req)
{
	CURL	   *easy = curl_easy_init();

	req->result = CURLE_OK;
	req->status = 0;
	req->response = NULL;
	req->response_len = 0;
	req->response_cap = 0;
	req->response_too_long = false;
	req->request_id[0] = '\0';
	req->retry_after_s = -1;
	req->should_retry = -1;
	req->replayed = false;
	req->maybe_reached = false;
	req->easy = easy;
	if (easy == NULL)
		return false;

	curl_easy_setopt(easy, CURLOPT_URL, req->url);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, req->timeout_ms);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, req->connect_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "payment_ext/1.0");
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, req->headers);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, http_write_cb);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, http_header_cb);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, req);
	if (req->post)
	{
		curl_easy_setopt(easy, CURLOPT_POST, 1L);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body ? req->body : "");
		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long) req->body_len);
	}
	else
		curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);

	if (curl_multi_add_handle(http->multi, easy) != CURLM_OK)
	{
		curl_easy_cleanup(easy);
		req->easy = NULL;
		return false;
	}
	dlist_push_tail(&http->active, &req->node);
	http->in_flight++;
	return true;
}

/* Let curl act on every ready socket and on its timer if due. */
static void
http_drive(PeHttp *http)
{
	struct epoll_event evs[HTTP_EPOLL_BATCH];
	int			running;
	int			n;
	int			i;

	do
	{
		n = epoll_wait(http->epfd, evs, HTTP_EPOLL_BATCH, 0);
		for (i = 0; i < n; i++)
		{
			int			action = 0;

			if (evs[i].events & EPOLLIN)
				action |= CURL_CSELECT_IN;
			if (evs[i].events & EPOLLOUT)
				action |= CURL_CSELECT_OUT;
			if (evs[i].events & (EPOLLERR | EPOLLHUP))
				action |= CURL_CSELECT_ERR;
			curl_multi_socket_action(http->multi, evs[i].data.fd, action, &running);
		}
	} while (n == HTTP_EPOLL_BATCH);

	if (http->timer_at != 0 && GetCurrentTimestamp() >= http->timer_at)
	{
		http->timer_at = 0;
		curl_multi_socket_action(http->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
}

/*
 * pe_http_wait
 *		Sleep until the latch is set, a curl socket is ready, curl's timer
 *		or timeout_ms (-1: none) expires; then let curl work.  Returns
 *		WL_LATCH_SET (latch already reset: the caller checks its
 *		conditions) or 0.  Exits the process if the postmaster dies.
 */
int
pe_http_wait(PeHttp *http, long timeout_ms, uint32 wait_event_info)
{
	WaitEvent	events[3];
	int			n;
	int			i;
	int			flags = 0;

	if (http->timer_at != 0)
	{
		long		secs;
		int			usecs;
		long		curl_ms;

		TimestampDifference(GetCurrentTimestamp(), http->timer_at, &secs, &usecs);
		curl_ms = secs * 1000 + (usecs + 999) / 1000;
		if (timeout_ms < 0 || curl_ms < timeout_ms)
			timeout_ms = curl_ms;
	}

	n = WaitEventSetWait(http->wait_set, timeout_ms, events, lengthof(events),
						 wait_event_info);
	for (i = 0; i < n; i++)
	{
		if (events[i].events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			flags |= WL_LATCH_SET;
		}
	}
	http_drive(http);
	return flags;
}

/*
 * pe_http_next_done
 *		A finished request with its outcome filled in, or NULL.  The easy
 *		handle is freed; the caller still owns req and calls pe_http_release.
 */
PeHttpRequest *
pe_http_next_done(PeHttp *http)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(http->multi, &left)) != NULL)
	{
		PeHttpRequest *req = NULL;
		CURL	   *easy = msg->easy_handle;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &req);
		req->result = msg->data.result;
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &req->status);
		if (req->result != CURLE_OK)
			req->status = 0;
		req->maybe_reached = http_maybe_reached(easy, req->result);
		curl_multi_remove_handle(http->multi, easy);
		curl_easy_cleanup(easy);
		req->easy = NULL;
		dlist_delete(&req->node);
		/* the request (API key, opened ids) is not needed any more */
		if (req->body != NULL)
			explicit_bzero(req->body, req->body_len);
		{
			struct curl_slist *h;

			for (h = req->headers; h != NULL; h = h->next)
				explicit_bzero(h->data, strlen(h->data));
			curl_slist_free_all(req->headers);
			req->headers = NULL;
		}
		http->in_flight--;
		return req;
	}
	return NULL;
}

/* Requests started and not yet returned by pe_http_next_done. */
int
pe_http_in_flight(PeHttp *http)
{
	return http ? http->in_flight : 0;
}

/* A short, secret-free description of a request that got no answer. */
const char *
pe_http_error_text(PeHttpRequest *req)
{
	if (req->response_too_long)
		return "response longer than 1 MB";
	return curl_easy_strerror(req->result);
}
