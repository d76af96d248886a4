/*
 * Password checks off the event loop.  An Argon2id verification costs about
 * a tenth of a second of CPU by design; run on a worker's loop it stalled
 * every connection of that worker for as long (measured 54-228 ms of delay
 * on a /healthz sent during a sign-in).  One verifier thread per worker takes
 * the checks in order and hands each verdict back to the loop through h2o's
 * multithread queue, so the loop only waits for its own work.
 *
 * An unknown account is checked against a hash of a throw-away password made
 * by the thread when it starts: the same cost as a wrong password, so the
 * time to answer does not tell whether an email has an account.
 */
#include "aly/oauth_internal.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "aly/log.h"

/* Checks waiting at most (each a password copy and a hash): past that, sign-ins are refused as busy. */
#define VERIFY_QUEUE_MAX 64

typedef struct job {
    h2o_multithread_message_t message; /* the way back to the loop */
    h2o_linklist_t queued;             /* the verifier's queue */
    char hash[128];                    /* "" for an unknown account */
    char *password;
    size_t len;
    int ok;
    oauth_verify_cb cb;
    void *ctx;
} job_t;

static struct {
    int started;
    h2o_multithread_queue_t *queue;
    h2o_multithread_receiver_t receiver;
    pthread_t thread;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    h2o_linklist_t jobs; /* guarded by mutex */
    size_t waiting;      /* jobs handed to the thread and not yet back: the loop's count */
} V = {.mutex = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void *verifier(void *arg)
{
    (void)arg;
    char dummy[128];
    aly_err_t err;
    if (oauth_password_hash("not anyone's password", dummy, &err) != 0)
        dummy[0] = '\0';
    for (;;) {
        pthread_mutex_lock(&V.mutex);
        while (h2o_linklist_is_empty(&V.jobs))
            pthread_cond_wait(&V.cond, &V.mutex);
        job_t *j = H2O_STRUCT_FROM_MEMBER(job_t, queued, V.jobs.next);
        h2o_linklist_unlink(&j->queued);
        pthread_mutex_unlock(&V.mutex);
        int known = j->hash[0] != '\0';
        j->ok = oauth_password_check(known ? j->hash : dummy, j->password, j->len) && known;
        OPENSSL_cleanse(j->password, j->len);
        free(j->password);
        j->password = NULL;
        h2o_multithread_send_message(&V.receiver, &j->message);
    }
    return NULL;
}

static void on_verdicts(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    (void)receiver;
    while (!h2o_linklist_is_empty(messages)) {
        job_t *j = H2O_STRUCT_FROM_MEMBER(job_t, message.link, messages->next);
        h2o_linklist_unlink(&j->message.link);
        V.waiting--;
        j->cb(j->ctx, j->ok);
        free(j);
    }
}

int oauth_verify_start(h2o_loop_t *loop, const char *hash, const char *password, size_t len, oauth_verify_cb cb, void *ctx)
{
    if (!V.started) {
        h2o_linklist_init_anchor(&V.jobs);
        V.queue = h2o_multithread_create_queue(loop);
        h2o_multithread_register_receiver(V.queue, &V.receiver, on_verdicts);
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&V.thread, &attr, verifier, NULL);
        pthread_attr_destroy(&attr);
        if (rc != 0) {
            log_error("cannot start the password verifier thread: %s", strerror(rc));
            h2o_multithread_unregister_receiver(V.queue, &V.receiver);
            h2o_multithread_destroy_queue(V.queue);
            return -1;
        }
        V.started = 1;
    }
    if (V.waiting >= VERIFY_QUEUE_MAX || len > 1024)
        return -1;
    job_t *j = calloc(1, sizeof(*j));
    char *copy = j != NULL ? malloc(len + 1) : NULL;
    if (copy == NULL) {
        free(j);
        return -1;
    }
    memcpy(copy, password, len);
    copy[len] = '\0';
    if (hash != NULL)
        snprintf(j->hash, sizeof(j->hash), "%s", hash);
    j->password = copy;
    j->len = len;
    j->cb = cb;
    j->ctx = ctx;
    V.waiting++;
    pthread_mutex_lock(&V.mutex);
    h2o_linklist_insert(&V.jobs, &j->queued);
    pthread_cond_signal(&V.cond);
    pthread_mutex_unlock(&V.mutex);
    return 0;
}
