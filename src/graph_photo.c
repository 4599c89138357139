/*
 * graph_photo — users' profile photos: the metadata that says whether a
 * photo changed, its bytes, and writing or removing one. See
 * include/graph.h.
 *
 * The shapes here are Graph's (profilephoto-get, -update, -delete): the
 * metadata's @odata.mediaEtag, the "1x1" photo with an empty etag that
 * stands for none, the 404 of a user without a photo. Nothing here
 * decides what to copy: that is photo.c's. Ids reach a URL only when
 * they look like object ids; binary bodies are never logged.
 */
#include "graph_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ETAG_MAX 256

struct pcall {
  graph_photo_fn meta;
  void *ctx;
};

/* Object ids are GUIDs; anything else must not reach a URL. */
static int
object_id(const char *id)
{
  size_t n = 0;

  if (id == NULL)
    return 0;
  for (; id[n] != '\0'; n++) {
    char c = id[n];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
          (c >= 'A' && c <= 'F') || c == '-') ||
        n >= 64)
      return 0;
  }
  return n > 0;
}

int
graph_photo_parse(const json_t *body, struct graph_photo *out)
{
  const json_t *etag, *type;
  const char *id, *e;

  memset(out, 0, sizeof(*out));
  out->etag = out->content_type = "";
  if (!json_is_object(body))
    return -1;
  etag = json_object_get(body, "@odata.mediaEtag");
  type = json_object_get(body, "@odata.mediaContentType");
  id = json_string_value(json_object_get(body, "id"));
  if (etag != NULL && !json_is_string(etag) && !json_is_null(etag))
    return -1;
  e = json_string_value(etag);
  if (e != NULL) {
    size_t n = json_string_length(etag);
    if (n > ETAG_MAX || strlen(e) != n)
      return -1;
    for (size_t i = 0; i < n; i++) {
      if ((unsigned char)e[i] < 0x20 || e[i] == 0x7f)
        return -1;
    }
    out->etag = e;
  }
  if (json_is_string(type))
    out->content_type = json_string_value(type);
  out->present =
      out->etag[0] != '\0' && !(id != NULL && strcasecmp(id, "1x1") == 0);
  return 0;
}

static void
on_meta(void *ctx, const struct graph_response *resp)
{
  struct pcall *c = ctx;
  struct graph_response r = *resp;
  struct graph_photo photo;

  if (resp->result == GRAPH_OK) {
    if (graph_photo_parse(resp->body, &photo) == 0) {
      c->meta(c->ctx, resp, &photo);
    } else {
      r.result = GRAPH_ERR_PROTOCOL;
      r.errmsg = "GET /users/{id}/photo: not a photo's metadata";
      r.transient = 0;
      c->meta(c->ctx, &r, NULL);
    }
  } else if (resp->result == GRAPH_ERR_HTTP && resp->status == 404 &&
             strcasecmp(resp->code, "Request_ResourceNotFound") != 0) {
    /* ImageNotFound (ErrorItemNotFound in older answers): no photo. */
    memset(&photo, 0, sizeof(photo));
    photo.etag = photo.content_type = "";
    r.result = GRAPH_OK;
    r.errmsg = "";
    r.code = "";
    r.transient = 0;
    c->meta(c->ctx, &r, &photo);
  } else {
    c->meta(c->ctx, resp, NULL);
  }
  free(c);
}

int
graph_photo_meta(struct graph *graph, const char *user_id, graph_photo_fn done,
                 void *ctx)
{
  struct pcall *c;
  char *url;
  int rc = -1;

  if (!object_id(user_id))
    return -1;
  c = calloc(1, sizeof(*c));
  url = graph_url_build("/users/%s/photo", user_id);
  if (c != NULL && url != NULL) {
    c->meta = done;
    c->ctx = ctx;
    rc = graph_submit(graph, "GET", 0, url, NULL, NULL, on_meta, c);
  }
  free(url);
  if (rc != 0)
    free(c);
  return rc;
}

static int
raw_call(struct graph *graph, const char *method, const char *user_id,
         const char *content_type, const void *data, size_t len,
         size_t max_body, graph_done_fn done, void *ctx)
{
  char *url, header[64];
  const char *headers[] = {NULL, NULL};
  struct graph_req *req;

  if (!object_id(user_id))
    return -1;
  if (content_type != NULL) {
    snprintf(header, sizeof(header), "Content-Type: %s", content_type);
    headers[0] = header;
  }
  url = graph_url_build("/v1.0/users/%s/photo/$value", user_id);
  if (url == NULL)
    return -1;
  req = graph_req_prepare_raw(graph, method, url, data, len, headers, max_body,
                              done, ctx);
  free(url);
  if (req == NULL)
    return -1;
  graph_req_start(req);
  return 0;
}

int
graph_photo_get(struct graph *graph, const char *user_id, size_t max_bytes,
                graph_done_fn done, void *ctx)
{
  return raw_call(graph, "GET", user_id, NULL, NULL, 0,
                  max_bytes > 0 ? max_bytes : 1, done, ctx);
}

int
graph_photo_put(struct graph *graph, const char *user_id,
                const char *content_type, const void *data, size_t len,
                graph_done_fn done, void *ctx)
{
  if (content_type == NULL || (strcmp(content_type, "image/jpeg") != 0 &&
                               strcmp(content_type, "image/png") != 0))
    return -1;
  return raw_call(graph, "PUT", user_id, content_type, data, len, 0, done,
                  ctx);
}

int
graph_photo_delete(struct graph *graph, const char *user_id,
                   graph_done_fn done, void *ctx)
{
  return raw_call(graph, "DELETE", user_id, NULL, NULL, 0, 0, done, ctx);
}
