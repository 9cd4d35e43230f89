// FUSE over io_uring beneath libfuse 3.14: see uring.h.
#include "uring.h"

#include <liburing.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "unique_fd.h"

namespace lamina {
// The rings' own types: named in uring (not an anonymous namespace) because UringQueues::State
// holds them.
namespace uring {

// Protocol 7.42 names that Debian 12's <linux/fuse.h> (7.37) does not have yet.
constexpr uint64_t kInitOverIoUring = 1ULL << 41;  // FUSE_OVER_IO_URING, in flags2 as bit 9
constexpr uint32_t kCmdRegister = 1;               // FUSE_IO_URING_CMD_REGISTER
constexpr uint32_t kCmdCommitAndFetch = 2;         // FUSE_IO_URING_CMD_COMMIT_AND_FETCH
constexpr size_t kHeaderAreaSize = 128;            // FUSE_URING_IN_OUT_HEADER_SZ
constexpr size_t kOpAreaSize = 128;                // FUSE_URING_OP_IN_OUT_SZ
constexpr size_t kMinReadBuffer = 8192;            // FUSE_MIN_READ_BUFFER
constexpr uint32_t kDefaultMaxPages = 32;          // FUSE_DEFAULT_MAX_PAGES_PER_REQ

struct EntryInOut {  // struct fuse_uring_ent_in_out
    uint64_t flags;
    uint64_t commit_id;
    uint32_t payload_sz;
    uint32_t padding;
    uint64_t reserved;
};

struct EntryHeader {  // struct fuse_uring_req_header
    char in_out[kHeaderAreaSize];
    char op_in[kOpAreaSize];
    EntryInOut ent;
};

struct CommandRequest {  // struct fuse_uring_cmd_req, in the SQE's 80-byte command area
    uint64_t flags;
    uint64_t commit_id;
    uint16_t qid;
    uint8_t padding[6];
};
static_assert(sizeof(EntryInOut) == 32 && sizeof(EntryHeader) == 288);
static_assert(sizeof(CommandRequest) == 24);

// Each CPU's queue is served by a few threads, each with its own ring and one entry: a handler
// that waits on the disk (a cold read, an fsync) holds up only its own entry, and the kernel
// hands the next request of that CPU to another thread's free entry. A free entry goes to the
// front of the kernel's list, so a CPU that asks one thing at a time keeps using one warm thread.
constexpr int kEntriesPerRing = 1;
constexpr unsigned kMaxRingsPerQueue = 4;
constexpr unsigned kMaxRingThreads = 128;
constexpr unsigned kRingDepth = 8;
// Room in front of the payload for the fuse_in_header and the largest op header, so a request
// is rebuilt in the layout of /dev/fuse without copying its payload.
constexpr size_t kPrefix = 256;
static_assert(kPrefix >= sizeof(fuse_in_header) + kOpAreaSize);

// Anonymous memory, unmapped when the owner goes: a payload buffer of max_write bytes is touched
// only as far as requests fill it.
class Mapping {
public:
    explicit Mapping(size_t size) : size_(size) {
        void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED) base_ = static_cast<char*>(p);
    }
    ~Mapping() {
        if (base_) munmap(base_, size_);
    }
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    char* get() const { return base_; }

private:
    char* base_ = nullptr;
    size_t size_;
};

struct Ring;

// One ring entry: the two buffers the kernel fills with a request and reads the reply from.
struct Entry {
    Entry(Ring* r, size_t payload_size) : ring(r), buffer(kPrefix + payload_size) {}
    Ring* ring;  // the ring it is registered on, which serves queue ring->qid
    EntryHeader header{};
    Mapping buffer;       // kPrefix bytes, then the payload the kernel sees
    iovec iov[2]{};       // header and payload, read by the kernel at REGISTER
    uint64_t unique = 0;  // of the request being served
    bool replied = false;
    bool got_request = false;
    char* payload() const { return buffer.get() + kPrefix; }
};

// One ring serving CPU qid's queue: its io_uring, its entries and the thread that waits on it.
struct Ring {
    UringQueues::State* owner = nullptr;  // what the rings share
    unsigned qid = 0;
    io_uring uring{};
    bool uring_ready = false;
    std::vector<std::unique_ptr<Entry>> entries;
    std::thread thread;
    ~Ring() {
        if (uring_ready) io_uring_queue_exit(&uring);
    }
};

}  // namespace uring

struct UringQueues::State {
    fuse_session* se = nullptr;
    bool insist = false;
    std::function<void(void*, ssize_t)> note;
    int devfd = -1;
    bool kernel_offers = false;
    bool granted = false;
    size_t payload_size = 0;
    unsigned cpus = 0;
    std::vector<std::unique_ptr<uring::Ring>> rings;  // several per CPU, each with its own thread
    UniqueFd stop_fd;
    std::atomic<uint64_t> served{0};
    std::atomic<bool> told_on{false};
    std::atomic<bool> told_refused{false};
    std::once_flag refused_once;
};

namespace uring {
namespace {

using State = UringQueues::State;

thread_local Entry* current_entry = nullptr;

// The kernel keeps one queue per possible CPU (num_possible_cpus()) and is ready only when each
// has an entry, so that is how many queues are registered, online or not.
unsigned possible_cpus() {
    std::ifstream in("/sys/devices/system/cpu/possible");
    std::string text;
    if (!(in >> text) || text.empty()) return 0;
    // "0-3" or "0,2-5": the highest number after the last separator.
    size_t cut = text.find_last_of(",-");
    std::string last = cut == std::string::npos ? text : text.substr(cut + 1);
    return static_cast<unsigned>(std::stoul(last)) + 1;
}

// The largest payload the kernel may put into an entry (ring->max_payload_sz): it refuses to
// register a smaller buffer.
size_t max_payload_size(const fuse_init_out& out) {
    size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    size_t pages =
        (out.flags & FUSE_MAX_PAGES) ? std::max<uint32_t>(out.max_pages, 1) : kDefaultMaxPages;
    size_t size = std::max<size_t>({kMinReadBuffer, out.max_write, pages * page});
    return (size + page - 1) / page * page;
}

void prepare_command(io_uring_sqe* sqe, uint32_t cmd_op, Entry& e, uint64_t commit_id) {
    std::memset(sqe, 0, 2 * sizeof(io_uring_sqe));  // SQE128: the command area is the 2nd half
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = e.ring->owner->devfd;
    sqe->cmd_op = cmd_op;
    if (cmd_op == kCmdRegister) {
        sqe->addr = reinterpret_cast<uintptr_t>(e.iov);
        sqe->len = 2;
    }
    CommandRequest req{};
    req.commit_id = commit_id;
    req.qid = static_cast<uint16_t>(e.ring->qid);
    std::memcpy(sqe->cmd, &req, sizeof req);
    io_uring_sqe_set_data(sqe, &e);
}

io_uring_sqe* next_sqe(io_uring& ring) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    if (!sqe) {
        io_uring_submit(&ring);
        sqe = io_uring_get_sqe(&ring);
    }
    return sqe;
}

// Builds the queue's ring and entries; false when the kernel or memory says no.
bool build_ring(Ring& q, size_t payload_size) {
    io_uring_params params{};
    params.flags = IORING_SETUP_SQE128;
    int err = io_uring_queue_init_params(kRingDepth, &q.uring, &params);
    if (err < 0) {
        spdlog::warn("io_uring: off: cannot set up a ring for CPU {}: {}", q.qid,
                     std::strerror(-err));
        return false;
    }
    q.uring_ready = true;
    for (int i = 0; i < kEntriesPerRing; i++) {
        auto e = std::make_unique<Entry>(&q, payload_size);
        if (!e->buffer.get()) {
            spdlog::warn("io_uring: off: cannot map {} bytes for a ring entry", payload_size);
            return false;
        }
        e->iov[0] = {&e->header, sizeof e->header};
        e->iov[1] = {e->payload(), payload_size};
        q.entries.push_back(std::move(e));
    }
    return true;
}

// Makes the kernel drop io_uring for this connection: a REGISTER it cannot accept (no buffers)
// clears the connection's io_uring flag and wakes the requests waiting for the ring.
void refuse(Ring& q) {
    std::call_once(q.owner->refused_once, [&q] {
        io_uring_sqe* sqe = next_sqe(q.uring);
        if (!sqe) return;
        prepare_command(sqe, kCmdRegister, *q.entries.front(), 0);
        sqe->len = 0;
        io_uring_sqe_set_data(sqe, nullptr);
        io_uring_cqe* cqe = nullptr;
        if (io_uring_submit_and_wait(&q.uring, 1) >= 0 && io_uring_wait_cqe(&q.uring, &cqe) == 0)
            io_uring_cqe_seen(&q.uring, cqe);
    });
}

// A reply the handler did not send (it must always send one) still frees the entry.
bool reply_into_entry(const iovec* iov, int count, ssize_t& written);

void commit_error(Entry& e, int err) {
    current_entry = &e;
    fuse_out_header out{sizeof out, -err, e.unique};
    iovec iov{&out, sizeof out};
    ssize_t written;
    reply_into_entry(&iov, 1, written);
    current_entry = nullptr;
}

// Rebuilds the request the kernel put into e as /dev/fuse would have delivered it, and has
// libfuse handle it in this thread.
void serve(Entry& e) {
    State& s = *e.ring->owner;
    fuse_in_header in;
    std::memcpy(&in, e.header.in_out, sizeof in);
    EntryInOut ent;
    std::memcpy(&ent, &e.header.ent, sizeof ent);
    e.unique = in.unique;
    e.replied = false;
    e.got_request = true;
    // The kernel puts the first argument (the op header, possibly empty) into op_in and the
    // rest into the payload; in.len counts all of them.
    size_t fixed = sizeof in + ent.payload_sz;
    if (in.len < fixed || in.len - fixed > kOpAreaSize || ent.payload_sz > s.payload_size) {
        spdlog::warn("io_uring: request {} (opcode {}) has len {} and payload {}: dropped",
                     in.unique, in.opcode, in.len, ent.payload_sz);
        commit_error(e, EIO);
        return;
    }
    size_t op_size = in.len - fixed;
    char* start = e.payload() - op_size - sizeof in;
    std::memcpy(start, &in, sizeof in);
    std::memcpy(start + sizeof in, e.header.op_in, op_size);
    // A REGISTER succeeds silently; the first request in an entry is the kernel's yes.
    if (!s.told_on.exchange(true))
        spdlog::info("io_uring: on: {} rings of {} entries for {} CPUs, {} KiB payload buffers",
                     s.rings.size(), kEntriesPerRing, s.cpus, s.payload_size / 1024);
    fuse_buf buf{};
    buf.size = in.len;
    buf.mem = start;
    current_entry = &e;
    s.note(start, in.len);  // what the device notes of a request it reads from /dev/fuse
    fuse_session_process_buf(s.se, &buf);
    current_entry = nullptr;
    s.served.fetch_add(1, std::memory_order_relaxed);
    if (!e.replied) {
        spdlog::debug("io_uring: request {} (opcode {}) got no reply", in.unique, in.opcode);
        commit_error(e, EIO);
    }
}

void pin_to_cpu(unsigned cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    // An offline CPU runs no callers either: its queue is served unpinned.
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        spdlog::debug("io_uring: cannot pin to CPU {}: {}", cpu, std::strerror(errno));
}

// Why an entry ended, for the log: a refusal at REGISTER is worth a warning, the kernel ending
// the commands at unmount is not.
void note_entry_end(const Entry& e, int res) {
    if (res == -ENOTCONN || res == -ECANCELED || res == -ECONNABORTED || res == -ENODEV) {
        spdlog::debug("io_uring: queue {} entry ended: {}", e.ring->qid, std::strerror(-res));
        return;
    }
    if (e.got_request)
        spdlog::warn("io_uring: queue {} entry failed: {}", e.ring->qid, std::strerror(-res));
    else if (!e.ring->owner->told_refused.exchange(true))
        spdlog::warn(
            "io_uring: off: the kernel refused to register a ring entry for CPU {}: {}; "
            "requests go through /dev/fuse",
            e.ring->qid, std::strerror(-res));
}

// The signals libfuse ends the session on must reach a thread blocked in read(2) on /dev/fuse,
// which they interrupt; in a ring thread they would be lost and the daemon would not exit.
void block_exit_signals() {
    sigset_t set;
    sigemptyset(&set);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, sig);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void run_ring(Ring& q) {
    State& s = *q.owner;
    block_exit_signals();
    pin_to_cpu(q.qid);
    io_uring_sqe* sqe = next_sqe(q.uring);
    io_uring_prep_poll_add(sqe, s.stop_fd.get(), POLLIN);
    io_uring_sqe_set_data(sqe, nullptr);
    for (auto& e : q.entries) prepare_command(next_sqe(q.uring), kCmdRegister, *e, 0);
    int live = static_cast<int>(q.entries.size());
    bool stopping = false;
    while (live > 0 && !stopping) {
        int err = io_uring_submit_and_wait(&q.uring, 1);
        if (err < 0 && err != -EINTR) {
            spdlog::warn("io_uring: queue {} stopped: {}", q.qid, std::strerror(-err));
            break;
        }
        io_uring_cqe* cqe;
        while (io_uring_peek_cqe(&q.uring, &cqe) == 0) {
            auto* e = static_cast<Entry*>(io_uring_cqe_get_data(cqe));
            int res = cqe->res;
            io_uring_cqe_seen(&q.uring, cqe);
            if (!e) {
                stopping = true;
            } else if (res < 0) {
                note_entry_end(*e, res);
                live--;
            } else {
                serve(*e);
            }
        }
    }
    // The replies committed last are still to be submitted; closing the ring then cancels the
    // entries the kernel holds.
    io_uring_submit(&q.uring);
}

}  // namespace

bool allowed_on_this_machine(bool may_enable) {
    constexpr const char* kParameter = "/sys/module/fuse/parameters/enable_uring";
    std::ifstream in(kParameter);
    std::string value;
    if (!(in >> value)) return false;  // a kernel without FUSE over io_uring
    if (value == "Y") return true;
    if (!may_enable) return false;
    std::ofstream out(kParameter);
    if (!(out << "Y" << std::flush)) {
        spdlog::info("io_uring: cannot set {} to Y: {}", kParameter, std::strerror(errno));
        return false;
    }
    spdlog::info(
        "io_uring: set {} to Y, which lets FUSE daemons ask for io_uring (-o io_uring=off "
        "keeps it as it was)",
        kParameter);
    return true;
}

}  // namespace uring

using namespace uring;

UringQueues::UringQueues(fuse_session* se, bool insist, std::function<void(void*, ssize_t)> note)
    : s_(std::make_unique<State>()) {
    s_->se = se;
    s_->insist = insist;
    s_->note = std::move(note);
}

UringQueues::~UringQueues() {
    stop();
}

bool UringQueues::offered() const {
    return s_->kernel_offers;
}

void UringQueues::note_init_request(uint64_t flags) {
    s_->kernel_offers = (flags & kInitOverIoUring) != 0;
}

void UringQueues::patch_init_reply(fuse_init_out& out) {
    State& s = *s_;
    if (s.granted) return;
    if (!s.kernel_offers) {
        spdlog::log(s.insist ? spdlog::level::warn : spdlog::level::info,
                    "io_uring: off: the kernel does not offer FUSE over io_uring (Linux 6.14+, "
                    "and /sys/module/fuse/parameters/enable_uring must be Y)");
        return;
    }
    unsigned cpus = possible_cpus();
    if (cpus == 0 || cpus > 0xffff) {
        spdlog::warn("io_uring: off: cannot read /sys/devices/system/cpu/possible");
        return;
    }
    s.payload_size = max_payload_size(out);
    s.stop_fd.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!s.stop_fd) {
        spdlog::warn("io_uring: off: eventfd: {}", std::strerror(errno));
        return;
    }
    s.cpus = cpus;
    unsigned per_cpu = std::clamp(kMaxRingThreads / cpus, 1u, kMaxRingsPerQueue);
    for (unsigned cpu = 0; cpu < cpus; cpu++) {
        for (unsigned i = 0; i < per_cpu; i++) {
            auto q = std::make_unique<Ring>();
            q->owner = &s;
            q->qid = cpu;
            bool ok = build_ring(*q, s.payload_size);
            s.rings.push_back(std::move(q));
            if (!ok) {
                s.rings.clear();
                return;
            }
        }
    }
    out.flags |= FUSE_INIT_EXT;
    out.flags2 |= static_cast<uint32_t>(kInitOverIoUring >> 32);
    s.granted = true;
}

void UringQueues::start(int devfd) {
    State& s = *s_;
    if (!s.granted || s.devfd >= 0) return;
    s.devfd = devfd;
    for (auto& q : s.rings) {
        try {
            q->thread = std::thread(run_ring, std::ref(*q));
        } catch (const std::system_error& e) {
            spdlog::warn(
                "io_uring: off: cannot start the thread for CPU {}: {}; requests go "
                "through /dev/fuse",
                q->qid, e.what());
            refuse(*q);
            return;
        }
    }
    spdlog::debug("io_uring: registering {} rings", s.rings.size());
}

bool UringQueues::send_reply(const iovec* iov, int count, ssize_t& written) {
    return uring::reply_into_entry(iov, count, written);
}

namespace uring {
namespace {

bool reply_into_entry(const iovec* iov, int count, ssize_t& written) {
    Entry* e = current_entry;
    if (!e || e->replied || count < 1 || iov[0].iov_len < sizeof(fuse_out_header)) return false;
    fuse_out_header out;
    std::memcpy(&out, iov[0].iov_base, sizeof out);
    // A notification (unique 0) from inside a handler still goes to /dev/fuse.
    if (out.unique != e->unique) return false;
    State& s = *e->ring->owner;
    size_t total = 0;
    size_t payload = 0;
    for (int i = 0; i < count; i++) {
        size_t skip = i == 0 ? sizeof out : 0;
        size_t n = iov[i].iov_len - skip;
        total += iov[i].iov_len;
        if (payload + n > s.payload_size) {
            out.error = -EIO;
            payload = 0;
            break;
        }
        std::memcpy(e->payload() + payload, static_cast<const char*>(iov[i].iov_base) + skip, n);
        payload += n;
    }
    std::memcpy(e->header.in_out, &out, sizeof out);
    EntryInOut ent{};
    ent.commit_id = e->unique;
    ent.payload_sz = static_cast<uint32_t>(payload);
    std::memcpy(&e->header.ent, &ent, sizeof ent);
    io_uring_sqe* sqe = next_sqe(e->ring->uring);
    if (!sqe) return false;
    prepare_command(sqe, kCmdCommitAndFetch, *e, e->unique);
    e->replied = true;
    written = static_cast<ssize_t>(total);
    return true;
}

}  // namespace
}  // namespace uring

void UringQueues::stop() {
    State& s = *s_;
    if (s.stop_fd) {
        uint64_t one = 1;
        if (write(s.stop_fd.get(), &one, sizeof one) != sizeof one)
            spdlog::warn("io_uring: cannot signal the ring threads: {}", std::strerror(errno));
    }
    for (auto& q : s.rings)
        if (q->thread.joinable()) q->thread.join();
}

uint64_t UringQueues::requests_served() const {
    return s_->served.load(std::memory_order_relaxed);
}

}  // namespace lamina
