/*
 * latencyfs: a read-only FUSE view of a folder in which metadata requests take time,
 * the way they do on NFS, Lustre, SMB or an object-store mount.
 *
 *   latencyfs --source=DIR --delay-us=500 --max-concurrent=16 [--types] [--stats=FILE] MOUNTPOINT
 *             -o ro,entry_timeout=3,attr_timeout=3,max_threads=256
 *
 * The model: every request that would be a round trip to a server (a lookup or getattr,
 * a directory listing, an open) waits --delay-us microseconds, while holding one of
 * --max-concurrent slots: the server answers that many requests at once and queues the
 * rest.  Reads of file contents are not delayed.  The kernel caches names and attributes
 * for entry_timeout/attr_timeout seconds (NFS keeps file attributes at least 3 s), so a
 * file stat'ed twice costs one round trip; a fresh mount starts cold.  READDIRPLUS is
 * off: a listing gives names and types, and a file's size costs a lookup of its own (as
 * on S3-style mounts, and on NFS for large folders).  A listing gives names only, as
 * NFSv3's READDIR does, so a walker learns an entry's type by a lookup too; --types
 * puts the types in the listing (as local file systems and most FUSE mounts do).  The daemon runs many threads
 * (max_threads) so that it is never what limits the requests in flight.
 *
 * --stats=FILE: on unmount, the number of delayed requests of each kind, as JSON.
 *
 * Build: cc -O2 -Wall -o latencyfs latencyfs.c $(pkg-config fuse3 --cflags --libs)
 */
#define FUSE_USE_VERSION 312
#define _GNU_SOURCE

#include <fuse.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

static struct {
	char *source;
	char *stats;
	unsigned delay_us;
	unsigned max_concurrent;
	int types;
} opt = {NULL, NULL, 500, 16, 0};

static const struct fuse_opt spec[] = {
	{"--source=%s", offsetof(typeof(opt), source), 0},
	{"--stats=%s", offsetof(typeof(opt), stats), 0},
	{"--delay-us=%u", offsetof(typeof(opt), delay_us), 0},
	{"--max-concurrent=%u", offsetof(typeof(opt), max_concurrent), 0},
	{"--types", offsetof(typeof(opt), types), 1},
	FUSE_OPT_END
};

enum kind { LOOKUP, READDIR, OPEN, KINDS };
static const char *kind_names[KINDS] = {"getattr", "readdir", "open"};
static unsigned long counts[KINDS];
static unsigned busy, peak;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t freed = PTHREAD_COND_INITIALIZER;

/* One round trip: wait for a free slot, hold it for the delay, let the next one in. */
static void round_trip(enum kind kind)
{
	static __thread int slack_set;
	if (!slack_set) { /* sleep as long as asked, not 50 us longer */
		prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
		slack_set = 1;
	}
	pthread_mutex_lock(&lock);
	while (opt.max_concurrent && busy >= opt.max_concurrent)
		pthread_cond_wait(&freed, &lock);
	busy++;
	if (busy > peak)
		peak = busy;
	counts[kind]++;
	pthread_mutex_unlock(&lock);
	struct timespec ts = {opt.delay_us / 1000000, (long)(opt.delay_us % 1000000) * 1000};
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
	pthread_mutex_lock(&lock);
	busy--;
	pthread_cond_signal(&freed);
	pthread_mutex_unlock(&lock);
}

static void real(const char *path, char *out)
{
	snprintf(out, PATH_MAX, "%s%s", opt.source, path);
}

static void *lat_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	conn->want &= ~FUSE_CAP_READDIRPLUS;
	cfg->use_ino = 1;
	return NULL;
}

static void lat_destroy(void *data)
{
	(void)data;
	if (!opt.stats)
		return;
	FILE *f = fopen(opt.stats, "w");
	if (!f)
		return;
	fprintf(f, "{");
	for (int k = 0; k < KINDS; k++)
		fprintf(f, "\"%s\": %lu, ", kind_names[k], counts[k]);
	fprintf(f, "\"peak_in_flight\": %u}\n", peak);
	fclose(f);
}

static int lat_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	char p[PATH_MAX];
	(void)fi;
	round_trip(LOOKUP);
	real(path, p);
	return lstat(p, st) == -1 ? -errno : 0;
}

static int lat_readlink(const char *path, char *buf, size_t size)
{
	char p[PATH_MAX];
	real(path, p);
	ssize_t n = readlink(p, buf, size - 1);
	if (n == -1)
		return -errno;
	buf[n] = '\0';
	return 0;
}

static int lat_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t offset,
		       struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	char p[PATH_MAX];
	(void)offset; (void)fi; (void)flags;
	round_trip(READDIR);
	real(path, p);
	DIR *dir = opendir(p);
	if (!dir)
		return -errno;
	struct dirent *d;
	while ((d = readdir(dir)) != NULL) {
		struct stat st = {0};
		st.st_ino = d->d_ino;
		if (opt.types)
			st.st_mode = DTTOIF(d->d_type);
		if (fill(buf, d->d_name, &st, 0, 0))
			break;
	}
	closedir(dir);
	return 0;
}

static int lat_open(const char *path, struct fuse_file_info *fi)
{
	char p[PATH_MAX];
	if ((fi->flags & O_ACCMODE) != O_RDONLY)
		return -EROFS;
	round_trip(OPEN);
	real(path, p);
	int fd = open(p, fi->flags);
	if (fd == -1)
		return -errno;
	fi->fh = fd;
	return 0;
}

static int lat_read(const char *path, char *buf, size_t size, off_t offset,
		    struct fuse_file_info *fi)
{
	(void)path;
	ssize_t n = pread(fi->fh, buf, size, offset);
	return n == -1 ? -errno : (int)n;
}

static int lat_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	close(fi->fh);
	return 0;
}

static int lat_statfs(const char *path, struct statvfs *st)
{
	(void)path;
	return statvfs(opt.source, st) == -1 ? -errno : 0;
}

static const struct fuse_operations ops = {
	.init = lat_init,
	.destroy = lat_destroy,
	.getattr = lat_getattr,
	.readlink = lat_readlink,
	.readdir = lat_readdir,
	.open = lat_open,
	.read = lat_read,
	.release = lat_release,
	.statfs = lat_statfs,
};

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	if (fuse_opt_parse(&args, &opt, spec, NULL) == -1)
		return 1;
	if (!opt.source) {
		fprintf(stderr, "latencyfs: --source=DIR is required\n");
		return 1;
	}
	char *source = realpath(opt.source, NULL);
	if (!source) {
		perror(opt.source);
		return 1;
	}
	opt.source = source;
	int ret = fuse_main(args.argc, args.argv, &ops, NULL);
	fuse_opt_free_args(&args);
	return ret;
}
