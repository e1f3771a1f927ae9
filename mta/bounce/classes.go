package bounce

import "github.com/mtakit/mtakit/mta/logs"

// The bounce classes KumoMTA predefines (crates/bounce-classify
// PreDefinedBounceClass), spelled exactly as it writes them in the
// bounce_classification field of a log record. A rules file may use any
// other name as well; such user-defined classes are returned verbatim.
const (
	InvalidRecipient     = "InvalidRecipient"     // the recipient is invalid
	DNSFailure           = "DNSFailure"           // a DNS failure
	SpamBlock            = "SpamBlock"            // blocked as coming from a known spam source
	SpamContent          = "SpamContent"          // blocked because the message looks like spam
	ProhibitedAttachment = "ProhibitedAttachment" // blocked because of an attachment
	RelayDenied          = "RelayDenied"          // relaying is not allowed
	AutoReply            = "AutoReply"            // an auto-reply or vacation message
	TransientFailure     = "TransientFailure"     // delivery is temporarily delayed
	Subscribe            = "Subscribe"            // a subscribe request
	Unsubscribe          = "Unsubscribe"          // an unsubscribe request
	ChallengeResponse    = "ChallengeResponse"    // a challenge-response probe
	BadConfiguration     = "BadConfiguration"     // configuration issues at the remote host
	BadConnection        = "BadConnection"        // connection problems with the remote host
	BadDomain            = "BadDomain"            // invalid or non-existent recipient domain
	ContentRelated       = "ContentRelated"       // refused for content reasons
	InactiveMailbox      = "InactiveMailbox"      // expired, inactive or disabled mailbox
	InvalidSender        = "InvalidSender"        // invalid DNS or MX for the sending domain
	MessageExpired       = "MessageExpired"       // not delivered before it expired
	NoAnswerFromHost     = "NoAnswerFromHost"     // no response from the remote host
	PolicyRelated        = "PolicyRelated"        // refused for general policy reasons
	ProtocolErrors       = "ProtocolErrors"       // SMTP syntax or sequence errors
	QuotaIssues          = "QuotaIssues"          // mailbox full or message too large
	RelayingIssues       = "RelayingIssues"       // problems at a relaying mail server
	RoutingErrors        = "RoutingErrors"        // mail routing problems for the domain
	SpamRelated          = "SpamRelated"          // refused for other spam-related reasons
	VirusRelated         = "VirusRelated"         // refused because of a virus
	AuthenticationFailed = "AuthenticationFailed" // an authentication policy was not met
	TooManyRecipients    = "TooManyRecipients"    // a recipient limit was hit (transient)

	// Uncategorized is the class of a response that no rule matched.
	Uncategorized = logs.Uncategorized
)

// predefined lists the predefined classes in KumoMTA's declaration order.
var predefined = [...]string{
	InvalidRecipient, DNSFailure, SpamBlock, SpamContent,
	ProhibitedAttachment, RelayDenied, AutoReply, TransientFailure,
	Subscribe, Unsubscribe, ChallengeResponse, BadConfiguration,
	BadConnection, BadDomain, ContentRelated, InactiveMailbox,
	InvalidSender, MessageExpired, NoAnswerFromHost, PolicyRelated,
	ProtocolErrors, QuotaIssues, RelayingIssues, RoutingErrors,
	SpamRelated, VirusRelated, AuthenticationFailed, TooManyRecipients,
	Uncategorized,
}

// PredefinedClasses returns the names of KumoMTA's predefined bounce
// classes, Uncategorized last. The result is a new slice on each call.
func PredefinedClasses() []string {
	out := make([]string, len(predefined))
	copy(out, predefined[:])
	return out
}

// IsPredefined reports whether class is one of KumoMTA's predefined bounce
// classes. The comparison is case-sensitive, as KumoMTA's is: a rules file
// that says "invalidrecipient" defines a user class of that name.
func IsPredefined(class string) bool {
	for _, p := range predefined {
		if p == class {
			return true
		}
	}
	return false
}

// Classifiable reports whether KumoMTA runs records of type t through the
// bounce classifier (kumo-log-types RecordType::is_bounce_classifiable):
// Bounce, TransientFailure, Expiration, AdminBounce, OOB, Feedback and
// Rejection. Other records keep the classification "Uncategorized".
func Classifiable(t logs.RecordType) bool {
	switch t {
	case logs.Bounce, logs.TransientFailure, logs.Expiration,
		logs.AdminBounce, logs.OOB, logs.Feedback, logs.Rejection:
		return true
	}
	return false
}
