;; Loops forever: only the time limit ends it (keep run --timeout: status 124 on every backend).
(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $forever (br $forever))))
