package nsq

// VERSION
const VERSION = "1.1.0"
