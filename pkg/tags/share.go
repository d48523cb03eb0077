package tags

// Share states recorded on an image in the Share tag.
const (
	ShareDone  = "done"
	ShareError = "error"
	// ShareMessage holds why sharing failed, for operators reading the console.
	ShareMessage = "amibackup:share-error"
)
