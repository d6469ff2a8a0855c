//! The definitions the hooks stand in front of, looked up once with `dlsym(RTLD_NEXT, name)`.

use std::ffi::c_void;
use std::sync::atomic::{AtomicPtr, Ordering};

use libc::{c_int, msghdr, size_t, sockaddr, socklen_t, ssize_t};

/// The next definition of `name` (NUL-terminated); aborts if there is none, since the program
/// could not run without it.
fn next(cache: &AtomicPtr<c_void>, name: &'static [u8]) -> *mut c_void {
    let p = cache.load(Ordering::Acquire);
    if !p.is_null() {
        return p;
    }
    // SAFETY: `name` is a NUL-terminated static string; RTLD_NEXT asks for the definition after
    // this library's, which is libc's for every name below.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) };
    if p.is_null() {
        let msg = b"ferrowall-shim: a libc function is missing\n";
        // SAFETY: writes a static buffer to stderr, then aborts: there is no way to go on.
        unsafe {
            libc::syscall(libc::SYS_write, 2, msg.as_ptr(), msg.len());
            libc::abort();
        }
    }
    cache.store(p, Ordering::Release);
    p
}

macro_rules! real {
    ($( $name:ident ( $($a:ident : $t:ty),* ) -> $ret:ty; )*) => {$(
        /// Calls the next definition of this function.
        ///
        /// # Safety
        /// The same contract as the libc function of this name.
        pub(crate) unsafe fn $name($($a: $t),*) -> $ret {
            static CACHE: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
            let p = next(&CACHE, concat!(stringify!($name), "\0").as_bytes());
            // SAFETY: `p` is the address of the libc function named `$name`, whose C prototype is
            // exactly this signature.
            let f = unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($t),*) -> $ret>(p) };
            // SAFETY: the caller upholds the function's contract.
            unsafe { f($($a),*) }
        }
    )*};
}

real! {
    socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    setsockopt(fd: c_int, level: c_int, name: c_int, val: *const c_void, len: socklen_t) -> c_int;
    getsockopt(fd: c_int, level: c_int, name: c_int, val: *mut c_void, len: *mut socklen_t) -> c_int;
    sendto(fd: c_int, buf: *const c_void, n: size_t, flags: c_int, addr: *const sockaddr, len: socklen_t) -> ssize_t;
    sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t;
    send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t;
    write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t;
    recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t;
    recvfrom(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> ssize_t;
    recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t;
    read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t;
    __recv_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int) -> ssize_t;
    __recvfrom_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> ssize_t;
    __read_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t) -> ssize_t;
    close(fd: c_int) -> c_int;
    dup(fd: c_int) -> c_int;
    dup2(old: c_int, new: c_int) -> c_int;
    dup3(old: c_int, new: c_int, flags: c_int) -> c_int;
}
